package coldplug

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
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
	// Late are modules loaded after the rounds settled, for devices that
	// appeared later (uevents, or sysfs rescans without them).
	Late   []string `json:"late,omitempty"`
	Events int      `json:"uevents,omitempty"` // "add" uevents with a modalias handled after the rounds
}

// Run loads drivers for every device until no new device appears for
// Settle, or Timeout passes. Failing modules are recorded, not fatal: a
// machine often has devices whose driver refuses them.
func Run(ctx context.Context, o Options) (*Result, error) {
	p, err := Start(ctx, o, nil)
	if err != nil {
		return p.res, err
	}
	return p.Stop(), nil
}

// Plug is a coldplug run that goes on loading drivers for devices that
// appear later (hotplug), until Stop: behind a SAS HBA or a USB hub the
// disks are reported seconds after their bus driver loaded, long after
// the first rounds settled.
type Plug struct {
	o      Options
	logf   func(string, ...any)
	src    UeventSource
	mu     sync.Mutex // guards res, seen, tried after Start returned
	res    *Result
	seen   map[string]bool
	tried  map[string]bool
	start  time.Time
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	events int // uevents handled while following
}

// Start runs the coldplug rounds like Run and returns once they settled
// (Result has what they did). When src is not nil it then follows src in
// the background: every "add" uevent with a modalias not seen yet gets its
// driver, and ErrLost triggers a sysfs rescan; with a nil src (and after
// a read error) it rescans sysfs every second instead. Open src before
// calling Start, so that no device appearing during the rounds is missed.
// Stop ends the following and closes src.
func Start(ctx context.Context, o Options, src UeventSource) (*Plug, error) {
	if o.Aliases == nil || o.Loader == nil {
		if src != nil {
			src.Close()
		}
		return &Plug{res: &Result{}}, errors.New("coldplug: Aliases and Loader are required")
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
	p := &Plug{o: o, logf: o.Log, src: src, res: &Result{Failed: map[string]string{}}, seen: map[string]bool{},
		tried: map[string]bool{}, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if p.logf == nil {
		p.logf = func(string, ...any) {}
	}
	if err := p.rounds(ctx); err != nil {
		if src != nil {
			src.Close()
		}
		close(p.done)
		p.finish()
		return p, err
	}
	p.finish()
	go p.follow()
	return p, nil
}

// Result returns a copy of what the run did so far.
func (p *Plug) Result() *Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := *p.res
	r.Loaded = append([]string(nil), p.res.Loaded...)
	r.Late = append([]string(nil), p.res.Late...)
	r.Failed = nil
	if len(p.res.Failed) > 0 {
		r.Failed = map[string]string{}
		for k, v := range p.res.Failed {
			r.Failed[k] = v
		}
	}
	return &r
}

// Stop ends the following, waits for a module load in progress, and
// returns the final result. Safe to call more than once.
func (p *Plug) Stop() *Result {
	p.once.Do(func() {
		close(p.stop)
		if p.src != nil {
			p.src.Close()
		}
	})
	<-p.done
	return p.Result()
}

// load loads m once; the caller holds no lock (Load can take seconds) but
// only one goroutine loads at a time (rounds, then follow).
func (p *Plug) load(m string, late bool) {
	p.mu.Lock()
	if p.tried[m] {
		p.mu.Unlock()
		return
	}
	p.tried[m] = true
	p.mu.Unlock()
	t0 := time.Now()
	err := p.o.Loader.Load(m)
	if d := time.Since(t0); d > 500*time.Millisecond {
		p.logf("coldplug: loading %s took %.1fs", m, d.Seconds())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.res.Failed[m] = err.Error()
		p.logf("coldplug: %s: %v", m, err)
		return
	}
	p.res.Loaded = append(p.res.Loaded, m)
	if late {
		p.res.Late = append(p.res.Late, m)
	}
}

// handle marks modaliases seen and loads their modules; it returns how
// many were new.
func (p *Plug) handle(aliases []string, late bool) int {
	var mods []string
	n := 0
	p.mu.Lock()
	for _, m := range aliases {
		if m == "" || p.seen[m] {
			continue
		}
		n++
		p.seen[m] = true
		p.res.Devices = len(p.seen)
		found := p.o.Aliases.Lookup(m)
		if len(found) == 0 {
			p.res.Unmatched++
		} else if late {
			p.logf("coldplug: new device %s: %s", m, strings.Join(found, " "))
		}
		mods = append(mods, found...)
	}
	p.mu.Unlock()
	for _, m := range mods {
		p.load(m, late)
	}
	return n
}

// rounds is the coldplug proper: scan, load, wait for what the loaded
// drivers bring up, until quiet for Settle or Timeout.
func (p *Plug) rounds(ctx context.Context) error {
	o := p.o
	deadline := p.start.Add(o.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	extraDone := false
	for {
		t0 := time.Now()
		fresh, err := p.fresh()
		if d := time.Since(t0); d > 500*time.Millisecond {
			p.logf("coldplug: scanning %s took %.1fs", o.Sys, d.Seconds())
		}
		if err != nil {
			return err
		}
		if len(fresh) == 0 {
			if !extraDone {
				for _, m := range o.Extra {
					p.load(m, false)
				}
				extraDone = true
			}
			// Settle: wait for devices that loaded drivers bring up.
			fresh, err = p.waitNew(ctx)
			if err != nil {
				return err
			}
			if len(fresh) == 0 {
				if ctx.Err() != nil && time.Now().After(deadline) {
					p.res.TimedOut = true
				}
				return nil
			}
		}
		p.res.Rounds++
		p.handle(fresh, false)
		p.logf("coldplug: round %d: %d new devices, %d modules loaded so far", p.res.Rounds, len(fresh), len(p.res.Loaded))
		if ctx.Err() != nil {
			p.res.TimedOut = true
			return nil
		}
	}
}

func (p *Plug) finish() {
	p.mu.Lock()
	p.res.Devices = len(p.seen)
	p.res.Elapsed = time.Since(p.start)
	p.mu.Unlock()
}

// follow handles devices that appear after the rounds, until Stop.
func (p *Plug) follow() {
	defer close(p.done)
	defer func() {
		p.mu.Lock()
		p.res.Events = p.events
		p.mu.Unlock()
	}()
	src := p.src
	for src != nil {
		u, err := src.Read()
		select {
		case <-p.stop:
			return
		default:
		}
		switch {
		case errors.Is(err, ErrLost):
			p.logf("coldplug: %v; rescanning sysfs", err)
			if fresh, err := p.fresh(); err == nil {
				p.handle(fresh, true)
			}
		case err != nil:
			p.logf("coldplug: reading uevents: %v; polling sysfs instead", err)
			src = nil
		case u.Action == "add" && u.Modalias() != "":
			p.events++
			p.handle([]string{u.Modalias()}, true)
		}
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if fresh, err := p.fresh(); err == nil {
				p.handle(fresh, true)
			}
		}
	}
}

func (p *Plug) fresh() ([]string, error) {
	p.mu.Lock()
	seen := p.seen
	p.mu.Unlock()
	all, err := Modaliases(p.o.Sys)
	if err != nil {
		return nil, err
	}
	var fresh []string
	p.mu.Lock()
	for _, m := range all {
		if !seen[m] {
			fresh = append(fresh, m)
		}
	}
	p.mu.Unlock()
	return fresh, nil
}

func (p *Plug) waitNew(ctx context.Context) ([]string, error) {
	t := time.NewTimer(p.o.Settle)
	defer t.Stop()
	tick := time.NewTicker(p.o.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-t.C:
			return nil, nil
		case <-tick.C:
			fresh, err := p.fresh()
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
	if len(r.Late) > 0 {
		s += fmt.Sprintf(", loaded later for new devices: %v", r.Late)
	}
	if r.TimedOut {
		s += " (stopped at the time limit)"
	}
	return s
}
