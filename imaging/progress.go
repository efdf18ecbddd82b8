package imaging

import (
	"fmt"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/schollz/progressbar/v3"
)

// startProgress shows the progress of counter() towards total (-1 when
// unknown) on opt.Progress until the returned stop is called.
func startProgress(opt *Options, label string, total int64, counter func() int64) (stop func()) {
	if opt.Progress == nil || opt.ProgressMode == ProgressNone {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	switch opt.ProgressMode {
	case ProgressBar:
		bar := progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(opt.Progress),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(opt.Progress) }),
		)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					_ = bar.Set64(counter())
				case <-done:
					_ = bar.Set64(counter())
					_ = bar.Finish()
					return
				}
			}
		}()
	default:
		start := time.Now()
		go func() {
			defer wg.Done()
			tick := time.NewTicker(opt.ProgressInterval)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					fmt.Fprintln(opt.Progress, progressLine(label, counter(), total, time.Since(start)))
				case <-done:
					fmt.Fprintln(opt.Progress, progressLine(label, counter(), total, time.Since(start)))
					return
				}
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

// progressLine formats one plain progress line, e.g.
// "restore: 1.2 GiB / 16.0 GiB (7%), 450.0 MiB/s, ETA 0:35".
func progressLine(label string, n, total int64, elapsed time.Duration) string {
	rate := float64(n) / max(elapsed.Seconds(), 1e-9)
	s := fmt.Sprintf("%s: %s", label, gpt.HumanBytes(n))
	if total > 0 {
		s += fmt.Sprintf(" / %s (%d%%)", gpt.HumanBytes(total), n*100/total)
	}
	s += fmt.Sprintf(", %s/s", gpt.HumanBytes(int64(rate)))
	if total > 0 && rate > 0 && n < total {
		eta := time.Duration(float64(total-n) / rate * float64(time.Second)).Round(time.Second)
		s += fmt.Sprintf(", ETA %d:%02d", int(eta.Minutes()), int(eta.Seconds())%60)
	}
	return s
}
