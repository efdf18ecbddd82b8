package coldplug

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// AlwaysWanted are loaded whatever the hardware: the FAT driver and code
// pages to read the USB stick and ESXi's boot banks (Debian mounts FAT with
// iocharset=ascii by default: CONFIG_FAT_DEFAULT_IOCHARSET).
var AlwaysWanted = []string{"vfat", "nls_cp437", "nls_iso8859_1", "nls_ascii", "nls_utf8"}

// Loader loads one module and its dependencies. It must tolerate modules
// that are already loaded or built in.
type Loader interface {
	Load(module string) error
}

// Options configure Run.
type Options struct {
	Sys     string        // sysfs, normally /sys
	Aliases *Aliases      // the running kernel's modules.alias
	Loader  Loader        // loads modules (KernelLoader on a real system)
	Extra   []string      // loaded after the first round: AlwaysWanted, modules_load=
	Timeout time.Duration // upper bound for the whole run (0: 30 s)
	Settle  time.Duration // how long to wait for new devices after a round (0: 1 s)
	Poll    time.Duration // sysfs polling interval while settling (0: 100 ms)
	Log     func(format string, args ...any)
}

// Result says what Run found and did.
type Result struct {
	Devices   int               `json:"devices"`             // distinct modaliases seen
	Loaded    []string          `json:"loaded"`              // modules loaded (or already present), in load order
	Failed    map[string]string `json:"failed,omitempty"`    // module -> error
	Unmatched int               `json:"unmatched"`           // modaliases no module claims (often builtin drivers)
	Rounds    int               `json:"rounds"`              // sysfs scans that found new devices
	Elapsed   time.Duration     `json:"elapsed_ns"`          // wall time
	TimedOut  bool              `json:"timed_out,omitempty"` // stopped by Timeout while devices still appeared
}

// Run loads drivers for every device until no new device appears for
// Settle, or Timeout passes. Failing modules are recorded, not fatal: a
// machine often has devices whose driver refuses them.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Aliases == nil || o.Loader == nil {
		return nil, errors.New("coldplug: Aliases and Loader are required")
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = time.Second
	}
	if o.Poll == 0 {
		o.Poll = 100 * time.Millisecond
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	start := time.Now()
	deadline := start.Add(o.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	res := &Result{Failed: map[string]string{}}
	seen := map[string]bool{}
	tried := map[string]bool{}
	load := func(m string) {
		if tried[m] {
			return
		}
		tried[m] = true
		t0 := time.Now()
		err := o.Loader.Load(m)
		if d := time.Since(t0); d > 500*time.Millisecond {
			logf("coldplug: loading %s took %.1fs", m, d.Seconds())
		}
		if err != nil {
			res.Failed[m] = err.Error()
			logf("coldplug: %s: %v", m, err)
			return
		}
		res.Loaded = append(res.Loaded, m)
	}
	extraDone := false
	for {
		t0 := time.Now()
		fresh, err := newModaliases(o.Sys, seen)
		if d := time.Since(t0); d > 500*time.Millisecond {
			logf("coldplug: scanning %s took %.1fs", o.Sys, d.Seconds())
		}
		if err != nil {
			return res, err
		}
		if len(fresh) == 0 {
			if !extraDone {
				for _, m := range o.Extra {
					load(m)
				}
				extraDone = true
			}
			// Settle: wait for devices that loaded drivers bring up.
			fresh, err = waitNew(ctx, o.Sys, seen, o.Settle, o.Poll)
			if err != nil {
				return res, err
			}
			if len(fresh) == 0 {
				if ctx.Err() != nil && time.Now().After(deadline) {
					res.TimedOut = true
				}
				break
			}
		}
		res.Rounds++
		var mods []string
		for _, m := range fresh {
			seen[m] = true
			found := o.Aliases.Lookup(m)
			if len(found) == 0 {
				res.Unmatched++
			}
			mods = append(mods, found...)
		}
		for _, m := range mods {
			load(m)
		}
		logf("coldplug: round %d: %d new devices, %d modules loaded so far", res.Rounds, len(fresh), len(res.Loaded))
		if ctx.Err() != nil {
			res.TimedOut = true
			break
		}
	}
	res.Devices = len(seen)
	res.Elapsed = time.Since(start)
	if len(res.Failed) == 0 {
		res.Failed = nil
	}
	return res, nil
}

func newModaliases(sys string, seen map[string]bool) ([]string, error) {
	all, err := Modaliases(sys)
	if err != nil {
		return nil, err
	}
	var fresh []string
	for _, m := range all {
		if !seen[m] {
			fresh = append(fresh, m)
		}
	}
	return fresh, nil
}

func waitNew(ctx context.Context, sys string, seen map[string]bool, settle, poll time.Duration) ([]string, error) {
	t := time.NewTimer(settle)
	defer t.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-t.C:
			return nil, nil
		case <-tick.C:
			fresh, err := newModaliases(sys, seen)
			if err != nil || len(fresh) > 0 {
				return fresh, err
			}
		}
	}
}

// Summary is a one-line description of a Result for the console.
func (r *Result) Summary() string {
	failed := make([]string, 0, len(r.Failed))
	for m := range r.Failed {
		failed = append(failed, m)
	}
	sort.Strings(failed)
	s := fmt.Sprintf("%d devices, %d modules loaded, %d devices without a module, %d rounds, %.1fs",
		r.Devices, len(r.Loaded), r.Unmatched, r.Rounds, r.Elapsed.Seconds())
	if len(failed) > 0 {
		s += fmt.Sprintf(", failed: %v", failed)
	}
	if r.TimedOut {
		s += " (stopped at the time limit)"
	}
	return s
}
