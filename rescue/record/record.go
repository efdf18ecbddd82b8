// Package record keeps the account of a hands-off run where it survives
// and where it is watched: it captures the console log, starts the live
// status POSTs (rescue.report=) and the remote syslog (rescue.syslog=) as
// soon as the settings — the command line's or the job's — ask for them,
// and at the end marks a successful job done, completes the report (with
// every undo file whole), saves report.json and console.log in the run's
// directory on the rescue stick (fsynced, before rescue.done= acts), prints
// the report and POSTs it.
package record

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/console"
	"github.com/esxi-rescue/rescue/rescue/flow"
	"github.com/esxi-rescue/rescue/rescue/inventory"
	"github.com/esxi-rescue/rescue/rescue/job"
	"github.com/esxi-rescue/rescue/rescue/keep"
	"github.com/esxi-rescue/rescue/rescue/remotelog"
	"github.com/esxi-rescue/rescue/rescue/report"
	"github.com/esxi-rescue/rescue/rescue/status"
	"github.com/esxi-rescue/rescue/rescue/system"
)

// MaxLog bounds the console log kept (the oldest half is dropped beyond).
const MaxLog = 8 << 20

// Recorder is one run's record.
type Recorder struct {
	Con   *console.Console
	Rep   *report.Report
	Stick *keep.Stick // nil: not booted from the rescue stick (or none found)

	// StatusInterval overrides status.DefaultInterval (tests).
	StatusInterval time.Duration
	// OnStick is told when the stick is found (System.Keep).
	OnStick func(*keep.Stick)

	root       string
	identified bool
	log        logBuffer
	status     *status.Poster
	syslog     *remotelog.Sender
	cfgMu      sync.Mutex
}

// Start begins the record: the console log is captured. root is "/"
// normally. The machine is identified and the stick looked for once the
// drivers are loaded and the disks listed (Observe), or at Finish.
func Start(con *console.Console, rep *report.Report, root string) *Recorder {
	r := &Recorder{Con: con, Rep: rep, root: root}
	con.Tee(&r.log)
	rep.Host.ID = "unknown-host"
	rep.Run = rep.Host.ID + "-" + rep.Start.UTC().Format("20060102T150405Z")
	return r
}

// identify fills in the host identity and the run id, and finds the
// rescue stick (NIC and USB drivers must be loaded by then).
func (r *Recorder) identify() {
	if r.identified {
		return
	}
	r.identified = true
	root, rep, con := r.root, r.Rep, r.Con
	rep.Host.ID = keep.HostID(root)
	rep.Host.Serial = keep.Serial(root)
	if nics, err := (inventory.Sys{Root: root}).NICs(); err == nil {
		for _, n := range nics {
			rep.Host.MACs = append(rep.Host.MACs, n.MAC)
		}
	}
	if r.Stick != nil { // given (tests)
		rep.Run = strings.TrimPrefix(r.Stick.RunDir(), "/"+keep.LogsDir+"/")
		return
	}
	stick, err := keep.New(keep.Options{Root: root, HostID: rep.Host.ID, Time: rep.Start})
	if err == nil {
		r.Stick = stick
		if r.OnStick != nil {
			r.OnStick(stick)
		}
		rep.Run = strings.TrimPrefix(stick.RunDir(), "/"+keep.LogsDir+"/")
		con.Printf("keep: the rescue stick is %s; this run's files go to %s", stick.Device(), stick.RunDir())
	} else {
		rep.Run = keep.Sanitize(rep.Host.ID) + "-" + rep.Start.UTC().Format("20060102T150405Z")
		con.Printf("keep: %v: undo files and the log are kept only in the report", err)
	}
}

// Configure starts the live status and the remote syslog when c asks for
// them and they are not running yet (call it again once a job's settings
// are known).
func (r *Recorder) Configure(c *cmdline.Config) {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	if c == nil {
		return
	}
	if c.Report != "" && r.status == nil {
		r.status = &status.Poster{URL: c.Report, Run: r.Rep.Run, Host: r.Rep.Host.ID, Interval: r.StatusInterval, Log: r.Con.Printf}
		r.status.Start()
		r.Con.Printf("status: progress POSTed to %s every %s", cmdline.RedactURL(c.Report), r.status.Interval)
	}
	if c.Syslog != "" && r.syslog == nil {
		s, err := remotelog.New(c.Syslog, r.Rep.Host.ID, r.Rep.Run)
		if err != nil {
			r.Con.Printf("syslog: %v", err)
			return
		}
		s.Write([]byte(r.log.String())) // what the console showed so far
		r.syslog = s
		r.Con.Tee(s)
		r.Con.Printf("syslog: console lines go to %s (RFC 5424)", c.Syslog)
	}
}

// Observe is the flow's observer: after the drivers and disks steps the
// machine is identified and the stick found; live status and syslog
// start as the settings (the job's, after the job step) ask.
func (r *Recorder) Observe(step string, index, total int, c *cmdline.Config) {
	if step == flow.StepDrivers || step == flow.StepDisks {
		return
	}
	r.identify()
	r.Configure(c)
	if r.status != nil {
		r.status.Step(step, index, total)
	}
}

// Progress is imaging's progress callback.
func (r *Recorder) Progress(p imaging.Progress) {
	if r.status != nil {
		r.status.Bytes(p)
	}
}

// jobResult is the report's job section.
type jobResult struct {
	URL   string `json:"url"`
	Found bool   `json:"found"`
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"`
}

// Finish ends the run's record (see the package comment). It returns
// the error the run ends with: out.Err, or the failure to mark a
// successful job done (a job not marked done would run again at the next
// network boot, so the run must not reboot).
func (r *Recorder) Finish(ctx context.Context, out flow.Outcome, undos []system.UndoFile) error {
	r.identify()
	err := out.Err
	if out.Job != nil {
		jr := &jobResult{URL: out.Job.URL, Found: out.Job.Found}
		if err == nil && out.Job.Found {
			jctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			if derr := (&job.Client{}).Done(jctx, out.Job.Raw); derr != nil {
				jr.Error = derr.Error()
				err = derr
				r.Con.Marker("JOB NOT MARKED DONE: %v", derr)
			} else {
				jr.Done = true
				r.Con.Marker("JOB DONE %s", out.Job.URL)
			}
			cancel()
		}
		r.Rep.Job = jr
	}
	for _, u := range undos {
		if aerr := r.Rep.AddUndo(u.Step, u.Device, u.File, u.Data); aerr != nil {
			r.Con.Printf("report: %v", aerr)
		}
	}
	r.Rep.Finish(err)
	if r.status != nil {
		posts := r.status.Stop()
		r.Rep.Posts = &posts
	}
	if r.syslog != nil {
		st := r.syslog.Stats()
		r.Rep.Syslog = st
	}
	if r.Stick != nil {
		r.Rep.Kept = []string{r.Stick.Where("report.json"), r.Stick.Where("console.log")}
		for _, u := range undos {
			if strings.HasPrefix(u.File, r.Stick.Device()+":") {
				r.Rep.Kept = append(r.Rep.Kept, u.File)
			}
		}
	}
	r.Rep.Log = r.log.String()
	if r.Stick != nil {
		r.save()
	}
	r.Con.Printf("report:")
	r.Con.Write(r.Rep.ConsoleJSON())
	if r.status != nil {
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		perr := r.status.PostReport(pctx, 5, func(posts report.Posts) []byte {
			r.Rep.Posts = &posts
			return r.Rep.JSON()
		})
		cancel()
		if perr != nil {
			r.Con.Printf("report: %v", perr)
		} else {
			r.Con.Printf("report: sent to %s", cmdline.RedactURL(r.status.URL))
		}
	}
	if r.syslog != nil {
		r.syslog.Close(5 * time.Second)
	}
	return err
}

// save writes report.json and console.log to the stick, durably.
func (r *Recorder) save() {
	var saved []string
	for _, f := range []struct {
		name string
		data []byte
	}{{"report.json", r.Rep.JSON()}, {"console.log", []byte(r.Rep.Log)}} {
		if _, err := r.Stick.Save(f.name, f.data); err != nil {
			r.Con.Printf("keep: WARNING: %v", err)
			continue
		}
		saved = append(saved, f.name)
	}
	if len(saved) > 0 {
		r.Con.Printf("keep: %s saved (fsynced) in %s:%s", strings.Join(saved, ", "), r.Stick.Device(), r.Stick.RunDir())
	}
}

// logBuffer keeps the console text, bounded.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > MaxLog {
		cut := len(l.b) - MaxLog/2
		l.b = append([]byte(fmt.Sprintf("[... %d bytes of the log dropped ...]\n", cut)), l.b[cut:]...)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
