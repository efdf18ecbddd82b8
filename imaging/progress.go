package imaging

import (
	"fmt"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/schollz/progressbar/v3"
)

// Progress is one progress report for Options.OnProgress.
type Progress struct {
	Phase   string        // "restore", "backup", "bmap" or "verify"
	Done    int64         // bytes read from the source so far (compressed bytes for a compressed image)
	Total   int64         // bytes expected; -1 when unknown (a stream or an HTTP source without a length)
	Rate    float64       // bytes per second since the phase started
	ETA     time.Duration // time left at Rate; 0 when unknown
	Elapsed time.Duration // since the phase started
	Final   bool          // the phase has ended (successfully or not)
}

// makeProgress computes a Progress from the counter and the elapsed time.
func makeProgress(phase string, n, total int64, elapsed time.Duration, final bool) Progress {
	p := Progress{Phase: phase, Done: n, Total: total, Elapsed: elapsed, Final: final}
	p.Rate = float64(n) / max(elapsed.Seconds(), 1e-9)
	if total > 0 && p.Rate > 0 && n < total {
		p.ETA = time.Duration(float64(total-n) / p.Rate * float64(time.Second))
	}
	return p
}

// startProgress shows the progress of counter() towards total (-1 when
// unknown) on opt.Progress, and reports it to opt.OnProgress, until the
// returned stop is called.
func startProgress(opt *Options, label string, total int64, counter func() int64) (stop func()) {
	stopCB := startCallback(opt, label, total, counter)
	stopShow := showProgress(opt, label, total, counter)
	return func() { stopShow(); stopCB() }
}

// startCallback calls opt.OnProgress every opt.ProgressInterval and once,
// final, at stop.
func startCallback(opt *Options, label string, total int64, counter func() int64) (stop func()) {
	if opt.OnProgress == nil {
		return func() {}
	}
	start, done, finished := time.Now(), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(opt.ProgressInterval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				opt.OnProgress(makeProgress(label, counter(), total, time.Since(start), false))
			case <-done:
				opt.OnProgress(makeProgress(label, counter(), total, time.Since(start), true))
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

// showProgress draws the bar or prints plain lines on opt.Progress.
func showProgress(opt *Options, label string, total int64, counter func() int64) (stop func()) {
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
					describe(bar, opt, label)
					_ = bar.Set64(counter())
				case <-done:
					describe(bar, opt, label)
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
					fmt.Fprintln(opt.Progress, progressLine(label, counter(), total, time.Since(start))+note(opt))
				case <-done:
					fmt.Fprintln(opt.Progress, progressLine(label, counter(), total, time.Since(start))+note(opt))
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
	p := makeProgress(label, n, total, elapsed, false)
	s := fmt.Sprintf("%s: %s", label, gpt.HumanBytes(n))
	if total > 0 {
		s += fmt.Sprintf(" / %s (%d%%)", gpt.HumanBytes(total), n*100/total)
	}
	s += fmt.Sprintf(", %s/s", gpt.HumanBytes(int64(p.Rate)))
	if p.ETA > 0 {
		eta := p.ETA.Round(time.Second)
		s += fmt.Sprintf(", ETA %d:%02d", int(eta.Minutes()), int(eta.Seconds())%60)
	}
	return s
}

// note is what opt.progressNote adds to a progress line ("" without one).
func note(opt *Options) string {
	if opt.progressNote == nil {
		return ""
	}
	return "; " + opt.progressNote()
}

// describe puts opt.progressNote into the bar's description.
func describe(bar *progressbar.ProgressBar, opt *Options, label string) {
	if opt.progressNote != nil {
		bar.Describe(label + " (" + opt.progressNote() + ")")
	}
}
