// Package flow runs the rescue system's hands-off steps in order —
// drivers, disks, network, job, source and backup, reference, target,
// restore, fix, verify, boot check — logging each on the console as "RESCUE: STEP <name> ..."
// and recording it in the report. The first failing required step stops
// the flow, so nothing is written after a failure; the caller then prints
// "RESCUE: FAILED <reason>" and falls back to the shell.
//
// With rescue.job= the steps after "job" are planned from the job's
// settings, which the job step fetches (see JobFetcher): a job's own
// rescue.ssh= starts the SSH server right after the job step.
//
// The work itself is behind the Machine interface (the boundary to the
// hardware and the disk tools), so that the order and the stop-on-failure
// logic here are tested as they run.
package flow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/report"
)

// Step names, as printed in the markers.
const (
	StepDrivers   = "drivers"
	StepDisks     = "disks"
	StepNetwork   = "network"
	StepSSH       = "ssh"    // starts the SSH server (rescue.ssh=), optional: a failure only warns
	StepJob       = "job"    // fetches rescue.job=; the steps after it come from the job
	StepSource    = "source" // resolves rescue.source= (the disk to back up)
	StepBackup    = "backup" // copies it to rescue.dest=, before anything writes
	StepReference = "reference"
	StepTarget    = "target"
	StepRestore   = "restore"
	StepFix       = "fix"
	StepVerify    = "verify"
	StepBoot      = "boot" // checks the disk boots (esxiboot -dry-run); the kexec itself follows DONE
)

// Machine does the work of each step. Implementations return details for
// the report (plain data that marshals to JSON).
type Machine interface {
	Drivers(ctx context.Context) (any, error)
	Disks(ctx context.Context) (any, error)
	Network(ctx context.Context, c *cmdline.Config) (any, error)
	// Reference loads the reference table (rescue.ref, or the image's
	// table when restoring) and keeps it for the later steps.
	Reference(ctx context.Context, c *cmdline.Config) (any, error)
	// Target resolves rescue.target (auto: selection) and returns the
	// device path chosen.
	Target(ctx context.Context, c *cmdline.Config) (string, any, error)
	Restore(ctx context.Context, c *cmdline.Config, target string) (any, error)
	Fix(ctx context.Context, c *cmdline.Config, target string) (any, error)
	Verify(ctx context.Context, c *cmdline.Config, target string) (any, error)
	BootCheck(ctx context.Context, target string) (any, error)
}

// JobFetcher is implemented by Machines that fetch rescue.job=.
type JobFetcher interface {
	// Job fetches the job c.Job names and returns the configuration to
	// run: the command line with the job's arguments applied, or c itself
	// when the server has no job (job says which, for the outcome).
	Job(ctx context.Context, c *cmdline.Config) (run *cmdline.Config, job *JobInfo, err error)
}

// JobInfo is what the job step found.
type JobInfo struct {
	URL   string `json:"url"`   // expanded and redacted, for messages
	Found bool   `json:"found"` // false: the server had no job for this machine
	Raw   string `json:"-"`     // the expanded URL (may hold secrets): where Done is sent
}

// Backuper is implemented by Machines that back a disk up to a share
// (rescue.action=backup).
type Backuper interface {
	// Source resolves rescue.source (auto: selection) and returns the
	// device path chosen.
	Source(ctx context.Context, c *cmdline.Config) (string, any, error)
	Backup(ctx context.Context, c *cmdline.Config, source string) (any, error)
}

// SSHStarter is implemented by Machines that start the SSH server of
// rescue.ssh= (details: the host key's fingerprint, for the report).
type SSHStarter interface {
	SSH(ctx context.Context, c *cmdline.Config) (any, error)
}

// Observer is told when each step starts (live status), with the
// configuration it runs under (the job's after the job step).
type Observer func(step string, index, total int, c *cmdline.Config)

// Console receives log lines and markers.
type Console interface {
	Printf(format string, args ...any)
	Marker(format string, args ...any)
}

// Step is one planned step.
type Step struct {
	Name     string
	Required bool // a failure stops the flow (optional steps only warn)
	Writes   bool // writes to the target disk
}

// Plan lists the steps a configuration runs, in order.
// With rescue.job= it ends with the job step: what follows depends on the
// job (Rest).
func Plan(c *cmdline.Config) []Step {
	needNet := c.NeedsNetwork()
	steps := []Step{{Name: StepDrivers}, {Name: StepDisks}}
	if c.IP != nil {
		steps = append(steps, Step{Name: StepNetwork, Required: needNet && (!c.Interactive() || c.Job != "")})
	}
	if c.SSH != "" {
		steps = append(steps, Step{Name: StepSSH})
	}
	if c.Job != "" {
		return append(steps, Step{Name: StepJob, Required: true})
	}
	return append(steps, disksteps(c)...)
}

// Rest lists the steps after the job step for the job's configuration c,
// where before is the command line's: the SSH server first when the job
// sets a rescue.ssh= of its own (as the command line's would start it),
// then the disk steps.
func Rest(before, c *cmdline.Config) []Step {
	var steps []Step
	if c.SSH != "" && c.SSH != before.SSH {
		steps = append(steps, Step{Name: StepSSH})
	}
	return append(steps, disksteps(c)...)
}

func disksteps(c *cmdline.Config) []Step {
	var steps []Step
	if c.Interactive() {
		return steps
	}
	if c.Has(cmdline.ActionBackup) {
		steps = append(steps, Step{Name: StepSource, Required: true}, Step{Name: StepBackup, Required: true})
	}
	needRef := c.Has(cmdline.ActionFix) || c.Has(cmdline.ActionVerify) ||
		(c.Target == cmdline.TargetAuto && c.Has(cmdline.ActionRestore))
	if needRef {
		steps = append(steps, Step{Name: StepReference, Required: true})
	}
	if c.Target != "" {
		steps = append(steps, Step{Name: StepTarget, Required: true})
	}
	if c.Has(cmdline.ActionRestore) {
		steps = append(steps, Step{Name: StepRestore, Required: true, Writes: true})
	}
	if c.Has(cmdline.ActionFix) {
		steps = append(steps, Step{Name: StepFix, Required: true, Writes: true})
	}
	if c.Has(cmdline.ActionVerify) {
		steps = append(steps, Step{Name: StepVerify, Required: true})
	}
	if c.Has(cmdline.ActionBoot) {
		steps = append(steps, Step{Name: StepBoot, Required: true})
	}
	return steps
}

// Outcome is what Run did.
type Outcome struct {
	Target string          // the chosen device, "" if none
	Source string          // the disk backed up, "" if none
	Err    error           // the first required step's error, nil on success
	Failed string          // the name of the failed step
	Config *cmdline.Config // the configuration that ran: the job's with rescue.job=
	Job    *JobInfo        // what the job step found; nil without rescue.job=
}

// Run executes Plan(c) on m, logging to con and recording into rep.
func Run(ctx context.Context, c *cmdline.Config, m Machine, con Console, rep *report.Report) Outcome {
	return RunWith(ctx, c, m, con, rep, nil)
}

// RunWith is Run telling obs (if not nil) when each step starts.
func RunWith(ctx context.Context, c *cmdline.Config, m Machine, con Console, rep *report.Report, obs Observer) Outcome {
	out := Outcome{Config: c}
	steps := Plan(c)
	sshRunning := false // an SSH server started (one listens on port 22 at most)
	for i := 0; i < len(steps); i++ {
		s := steps[i]
		if out.Err != nil {
			rep.Steps = append(rep.Steps, report.Step{Name: s.Name, Status: "skipped"})
			continue
		}
		if s.Writes && out.Target == "" {
			// Cannot happen with a valid Config (Parse insists on a
			// target), but a write without a target must never run.
			out.Err, out.Failed = errors.New("no target disk"), s.Name
			con.Marker("STEP %s FAILED: no target disk", s.Name)
			rep.Steps = append(rep.Steps, report.Step{Name: s.Name, Status: "failed", Error: out.Err.Error()})
			continue
		}
		con.Marker("STEP %s (%d/%d)", s.Name, i+1, len(steps))
		if obs != nil {
			obs(s.Name, i+1, len(steps), out.Config)
		}
		start := time.Now()
		var details any
		var err error
		if s.Name == StepSSH && sshRunning {
			// The command line's server keeps running (its keys); a
			// second one could not listen on the same port.
			err = fmt.Errorf("the SSH server of the command line's rescue.ssh=%s is running; the job's rescue.ssh=%s is not used",
				cmdline.RedactURL(c.SSH), cmdline.RedactURL(out.Config.SSH))
		} else {
			details, err = runStep(ctx, s.Name, out.Config, m, &out)
		}
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		rs := report.Step{Name: s.Name, Start: start, Duration: time.Since(start), Details: details}
		rs.Seconds = rs.Duration.Seconds()
		switch {
		case err == nil:
			rs.Status = "ok"
			con.Marker("STEP %s ok (%.1fs)", s.Name, rs.Seconds)
		case !s.Required:
			rs.Status, rs.Error = "warning", err.Error()
			con.Marker("STEP %s WARNING (%.1fs): %v", s.Name, rs.Seconds, err)
		default:
			rs.Status, rs.Error = "failed", err.Error()
			con.Marker("STEP %s FAILED (%.1fs): %v", s.Name, rs.Seconds, err)
			out.Err, out.Failed = fmt.Errorf("%s: %w", s.Name, err), s.Name
		}
		rep.Steps = append(rep.Steps, rs)
		if details != nil {
			switch s.Name {
			case StepDrivers, StepDisks, StepNetwork, StepSSH, StepTarget, StepReference, StepJob, StepSource:
				rep.Found[s.Name] = details
			}
		}
		if s.Name == StepSSH && err == nil {
			sshRunning = true
		}
		if s.Name == StepJob && err == nil {
			steps = append(steps, Rest(c, out.Config)...)
		}
	}
	return out
}

func runStep(ctx context.Context, name string, c *cmdline.Config, m Machine, out *Outcome) (any, error) {
	switch name {
	case StepDrivers:
		return m.Drivers(ctx)
	case StepDisks:
		return m.Disks(ctx)
	case StepSSH:
		if sm, ok := m.(SSHStarter); ok {
			return sm.SSH(ctx, c)
		}
		return nil, errors.New("this system cannot start an SSH server")
	case StepNetwork:
		return m.Network(ctx, c)
	case StepJob:
		jf, ok := m.(JobFetcher)
		if !ok {
			return nil, errors.New("rescue.job= is not supported here")
		}
		run, info, err := jf.Job(ctx, c)
		out.Job = info
		if err == nil {
			if run == nil || run.Job != c.Job {
				return info, errors.New("the job's configuration lost rescue.job=")
			}
			out.Config = run
		}
		return info, err
	case StepSource, StepBackup:
		bm, ok := m.(Backuper)
		if !ok {
			return nil, errors.New("this system cannot back disks up")
		}
		if name == StepBackup {
			if out.Source == "" {
				return nil, errors.New("no source disk")
			}
			return bm.Backup(ctx, c, out.Source)
		}
		src, d, err := bm.Source(ctx, c)
		if err == nil {
			out.Source = src
		}
		return d, err
	case StepReference:
		return m.Reference(ctx, c)
	case StepTarget:
		t, d, err := m.Target(ctx, c)
		if err == nil {
			out.Target = t
		}
		return d, err
	case StepRestore:
		return m.Restore(ctx, c, out.Target)
	case StepFix:
		return m.Fix(ctx, c, out.Target)
	case StepVerify:
		return m.Verify(ctx, c, out.Target)
	case StepBoot:
		return m.BootCheck(ctx, out.Target)
	}
	return nil, fmt.Errorf("unknown step %q", name)
}
