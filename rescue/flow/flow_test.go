package flow

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/report"
)

// fakeMachine is the hardware boundary: it records the calls and fails
// the step named in fail.
type fakeMachine struct {
	calls  []string
	fail   map[string]error
	target string
}

func (f *fakeMachine) do(name string) (any, error) {
	f.calls = append(f.calls, name)
	if err := f.fail[name]; err != nil {
		return nil, err
	}
	return map[string]string{"step": name}, nil
}

func (f *fakeMachine) Drivers(context.Context) (any, error) { return f.do(StepDrivers) }
func (f *fakeMachine) Disks(context.Context) (any, error)   { return f.do(StepDisks) }
func (f *fakeMachine) Network(context.Context, *cmdline.Config) (any, error) {
	return f.do(StepNetwork)
}
func (f *fakeMachine) Reference(context.Context, *cmdline.Config) (any, error) {
	return f.do(StepReference)
}
func (f *fakeMachine) Target(_ context.Context, c *cmdline.Config) (string, any, error) {
	d, err := f.do(StepTarget)
	if err != nil {
		return "", nil, err
	}
	t := c.Target
	if t == cmdline.TargetAuto {
		t = f.target
	}
	return t, d, nil
}
func (f *fakeMachine) Restore(_ context.Context, _ *cmdline.Config, t string) (any, error) {
	return f.do(StepRestore + ":" + t)
}
func (f *fakeMachine) Fix(_ context.Context, _ *cmdline.Config, t string) (any, error) {
	return f.do(StepFix + ":" + t)
}
func (f *fakeMachine) Verify(_ context.Context, _ *cmdline.Config, t string) (any, error) {
	return f.do(StepVerify + ":" + t)
}
func (f *fakeMachine) Source(_ context.Context, c *cmdline.Config) (string, any, error) {
	d, err := f.do(StepSource)
	if err != nil {
		return "", nil, err
	}
	src := c.BackupSource
	if src == cmdline.TargetAuto {
		src = "/dev/sdc"
	}
	return src, d, nil
}
func (f *fakeMachine) Backup(_ context.Context, _ *cmdline.Config, src string) (any, error) {
	return f.do(StepBackup + ":" + src)
}
func (f *fakeMachine) BootCheck(_ context.Context, t string) (any, error) {
	return f.do(StepBoot + ":" + t)
}

type logConsole struct{ lines []string }

func (l *logConsole) Printf(format string, args ...any) {
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}
func (l *logConsole) Marker(format string, args ...any) {
	l.lines = append(l.lines, "RESCUE: "+fmt.Sprintf(format, args...))
}

func parse(t *testing.T, line string) *cmdline.Config {
	t.Helper()
	c, err := cmdline.Parse(cmdline.Split(line, "test", false))
	if err != nil {
		t.Fatalf("Parse(%q): %v", line, err)
	}
	return c
}

func TestRun(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		line      string
		fail      map[string]error
		wantCalls []string
		wantFail  string
		wantSteps string // name=status list from the report
	}{
		{name: "interactive shell only looks",
			line:      "",
			wantCalls: []string{"drivers", "disks"},
			wantSteps: "drivers=ok disks=ok"},
		{name: "full hands-off restore",
			line:      "rescue.action=restore,fix,verify,boot rescue.image=http://h/i.img rescue.target=auto",
			wantCalls: []string{"drivers", "disks", "network", "reference", "target", "restore:/dev/sdb", "fix:/dev/sdb", "verify:/dev/sdb", "boot:/dev/sdb"},
			wantSteps: "drivers=ok disks=ok network=ok reference=ok target=ok restore=ok fix=ok verify=ok boot=ok"},
		{name: "fix with explicit target",
			line:      "rescue.action=fix,verify rescue.target=/dev/sda",
			wantCalls: []string{"drivers", "disks", "reference", "target", "fix:/dev/sda", "verify:/dev/sda"},
			wantSteps: "drivers=ok disks=ok reference=ok target=ok fix=ok verify=ok"},
		{name: "restore failure stops before fix",
			line:      "rescue.action=restore,fix,verify rescue.image=/img rescue.target=/dev/sda",
			fail:      map[string]error{"restore:/dev/sda": boom},
			wantCalls: []string{"drivers", "disks", "reference", "target", "restore:/dev/sda"},
			wantFail:  "restore: boom",
			wantSteps: "drivers=ok disks=ok reference=ok target=ok restore=failed fix=skipped verify=skipped"},
		{name: "ambiguous target writes nothing",
			line:      "rescue.action=fix,verify,boot rescue.target=auto",
			fail:      map[string]error{"target": errors.New("2 disks qualify")},
			wantCalls: []string{"drivers", "disks", "reference", "target"},
			wantFail:  "target: 2 disks qualify",
			wantSteps: "drivers=ok disks=ok reference=ok target=failed fix=skipped verify=skipped boot=skipped"},
		{name: "fix failure stops verify and boot",
			line:      "rescue.action=fix,verify rescue.target=/dev/sda rescue.done=boot",
			fail:      map[string]error{"fix:/dev/sda": boom},
			wantCalls: []string{"drivers", "disks", "reference", "target", "fix:/dev/sda"},
			wantFail:  "fix: boom",
			wantSteps: "drivers=ok disks=ok reference=ok target=ok fix=failed verify=skipped boot=skipped"},
		{name: "verify failure stops boot",
			line:      "rescue.action=verify,boot rescue.target=/dev/sda",
			fail:      map[string]error{"verify:/dev/sda": boom},
			wantCalls: []string{"drivers", "disks", "reference", "target", "verify:/dev/sda"},
			wantFail:  "verify: boom",
			wantSteps: "drivers=ok disks=ok reference=ok target=ok verify=failed boot=skipped"},
		{name: "network needed for a URL image",
			line:      "rescue.action=restore rescue.image=http://h/i.img rescue.target=/dev/sda",
			fail:      map[string]error{"network": errors.New("no DHCP lease")},
			wantCalls: []string{"drivers", "disks", "network"},
			wantFail:  "network: no DHCP lease",
			wantSteps: "drivers=ok disks=ok network=failed target=skipped restore=skipped"},
		{name: "hands-off backup",
			line:      "rescue.action=backup rescue.source=auto rescue.dest=smb://nas/img/a.zst",
			wantCalls: []string{"drivers", "disks", "network", "source", "backup:/dev/sdc"},
			wantSteps: "drivers=ok disks=ok network=ok source=ok backup=ok"},
		{name: "backup before the restore; its failure writes nothing",
			line:      "rescue.action=restore,backup rescue.source=/dev/sda rescue.dest=nfs://nas/x/a.img rescue.image=http://h/i.img rescue.target=/dev/sda",
			fail:      map[string]error{"backup:/dev/sda": boom},
			wantCalls: []string{"drivers", "disks", "network", "source", "backup:/dev/sda"},
			wantFail:  "backup: boom",
			wantSteps: "drivers=ok disks=ok network=ok source=ok backup=failed target=skipped restore=skipped"},
		{name: "ambiguous source backs nothing up",
			line:      "rescue.action=backup rescue.source=auto rescue.dest=s3://b/a.zst",
			fail:      map[string]error{"source": errors.New("2 disks qualify")},
			wantCalls: []string{"drivers", "disks", "network", "source"},
			wantFail:  "source: 2 disks qualify",
			wantSteps: "drivers=ok disks=ok network=ok source=failed backup=skipped"},
		{name: "optional network and driver trouble only warn",
			line:      "rescue.action=fix rescue.target=/dev/sda ip=dhcp",
			fail:      map[string]error{"network": errors.New("no DHCP lease"), "drivers": errors.New("no modules.alias")},
			wantCalls: []string{"drivers", "disks", "network", "reference", "target", "fix:/dev/sda"},
			wantSteps: "drivers=warning disks=ok network=warning reference=ok target=ok fix=ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parse(t, tc.line)
			m := &fakeMachine{fail: tc.fail, target: "/dev/sdb"}
			con := &logConsole{}
			rep := report.New("test")
			out := Run(context.Background(), c, m, con, rep)
			if !reflect.DeepEqual(m.calls, tc.wantCalls) {
				t.Errorf("calls %v, want %v", m.calls, tc.wantCalls)
			}
			if tc.wantFail == "" && out.Err != nil || tc.wantFail != "" && (out.Err == nil || out.Err.Error() != tc.wantFail) {
				t.Errorf("outcome %v, want %q", out.Err, tc.wantFail)
			}
			var steps []string
			for _, s := range rep.Steps {
				steps = append(steps, s.Name+"="+s.Status)
			}
			if got := strings.Join(steps, " "); got != tc.wantSteps {
				t.Errorf("report steps %q, want %q", got, tc.wantSteps)
			}
			// Every step that ran has a start marker and an end marker.
			var markers int
			for _, l := range con.lines {
				if strings.HasPrefix(l, "RESCUE: STEP ") {
					markers++
				}
			}
			if markers != 2*len(m.calls) {
				t.Errorf("%d STEP markers for %d steps run:\n%s", markers, len(m.calls), strings.Join(con.lines, "\n"))
			}
		})
	}
}

func TestCancelledContextStops(t *testing.T) {
	c := parse(t, "rescue.action=fix,verify rescue.target=/dev/sda")
	ctx, cancel := context.WithCancel(context.Background())
	m := &fakeMachine{}
	// Cancel while the reference step runs: the step's result is then a
	// failure and nothing after it runs.
	cm := &cancelOn{fakeMachine: m, step: StepReference, cancel: cancel}
	out := Run(ctx, c, cm, &logConsole{}, report.New("test"))
	if out.Err == nil || !errors.Is(out.Err, context.Canceled) {
		t.Fatalf("outcome %v, want context.Canceled", out.Err)
	}
	if want := []string{"drivers", "disks", "reference"}; !reflect.DeepEqual(m.calls, want) {
		t.Errorf("calls %v, want %v", m.calls, want)
	}
}

type cancelOn struct {
	*fakeMachine
	step   string
	cancel func()
}

func (c *cancelOn) Reference(ctx context.Context, cfg *cmdline.Config) (any, error) {
	c.cancel()
	return c.fakeMachine.Reference(ctx, cfg)
}

// jobMachine is a fakeMachine whose job step applies job (kernel command
// line syntax) to the base line, or finds no job when job is "".
type jobMachine struct {
	fakeMachine
	base, job string
}

func (j *jobMachine) Job(_ context.Context, c *cmdline.Config) (*cmdline.Config, *JobInfo, error) {
	if _, err := j.do(StepJob); err != nil {
		return nil, nil, err
	}
	if j.job == "" {
		return c, &JobInfo{URL: c.Job}, nil
	}
	run, err := cmdline.Parse(append(cmdline.Split(j.base, "base", false), cmdline.Split(j.job, "job", true)...))
	return run, &JobInfo{URL: c.Job, Found: true}, err
}

func TestJob(t *testing.T) {
	base := "rescue.job=http://h/jobs/${mac}"
	for _, tc := range []struct {
		name, job string
		fail      map[string]error
		want      []string
		done      cmdline.Done
		err       string
	}{
		{name: "job runs", job: "rescue.action=fix,verify rescue.target=auto rescue.done=reboot",
			want: []string{"drivers", "disks", "network", "job", "reference", "target", "fix:/dev/sdb", "verify:/dev/sdb"}, done: cmdline.DoneReboot},
		{name: "no job", want: []string{"drivers", "disks", "network", "job"}, done: cmdline.DoneShell},
		{name: "job fetch fails", job: "x", fail: map[string]error{StepJob: errors.New("503")},
			want: []string{"drivers", "disks", "network", "job"}, err: "job: 503"},
		{name: "network fails", job: "x", fail: map[string]error{StepNetwork: errors.New("no link")},
			want: []string{"drivers", "disks", "network"}, err: "network: no link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &jobMachine{fakeMachine: fakeMachine{fail: tc.fail, target: "/dev/sdb"}, base: base, job: tc.job}
			rep := report.New("test")
			var seen []string
			out := RunWith(context.Background(), parse(t, base), m, &logConsole{}, rep,
				func(step string, i, n int, _ *cmdline.Config) {
					seen = append(seen, fmt.Sprintf("%s %d/%d", step, i, n))
				})
			if !reflect.DeepEqual(m.calls, tc.want) {
				t.Errorf("calls %v, want %v", m.calls, tc.want)
			}
			if tc.err != "" {
				if out.Err == nil || out.Err.Error() != tc.err {
					t.Errorf("Err = %v, want %q", out.Err, tc.err)
				}
				return
			}
			if out.Err != nil || out.Config.Done != tc.done || out.Job == nil || out.Job.Found != (tc.job != "") {
				t.Errorf("outcome %+v (config %+v)", out, out.Config)
			}
			if len(seen) != len(tc.want) || seen[0] != "drivers 1/4" || (tc.job != "" && seen[len(seen)-1] != "verify 8/8") {
				t.Errorf("observer saw %v", seen)
			}
		})
	}
}

// SSH records the rescue.ssh= it was asked to start (flow.SSHStarter).
func (j *jobMachine) SSH(_ context.Context, c *cmdline.Config) (any, error) {
	return j.do(StepSSH + ":" + c.SSH)
}

// TestJobSSH: a job's own rescue.ssh= starts the SSH server right after
// the job step, as the command line's would before it; one started by the
// command line is not started again.
func TestJobSSH(t *testing.T) {
	const (
		jobURL = "rescue.job=http://h/jobs/${mac}"
		fix    = " rescue.action=fix,verify rescue.target=auto"
	)
	for _, tc := range []struct {
		name, base, job string
		fail            map[string]error
		want            []string
		steps           string // name=status from the report
	}{
		{name: "job starts ssh", base: jobURL, job: "rescue.ssh=http://h/keys" + fix,
			want:  []string{"drivers", "disks", "network", "job", "ssh:http://h/keys", "reference", "target", "fix:/dev/sdb", "verify:/dev/sdb"},
			steps: "drivers=ok disks=ok network=ok job=ok ssh=ok reference=ok target=ok fix=ok verify=ok"},
		{name: "job with ssh only (shell)", base: jobURL, job: "rescue.ssh=/keys",
			want:  []string{"drivers", "disks", "network", "job", "ssh:/keys"},
			steps: "drivers=ok disks=ok network=ok job=ok ssh=ok"},
		{name: "ssh failure only warns", base: jobURL, job: "rescue.ssh=http://h/keys" + fix,
			fail:  map[string]error{"ssh:http://h/keys": errors.New("404")},
			want:  []string{"drivers", "disks", "network", "job", "ssh:http://h/keys", "reference", "target", "fix:/dev/sdb", "verify:/dev/sdb"},
			steps: "drivers=ok disks=ok network=ok job=ok ssh=warning reference=ok target=ok fix=ok verify=ok"},
		{name: "same ssh on the command line: started once, before the job", base: jobURL + " rescue.ssh=/keys", job: "rescue.ssh=/keys" + fix,
			want:  []string{"drivers", "disks", "network", "ssh:/keys", "job", "reference", "target", "fix:/dev/sdb", "verify:/dev/sdb"},
			steps: "drivers=ok disks=ok network=ok ssh=ok job=ok reference=ok target=ok fix=ok verify=ok"},
		{name: "command line's server running: the job's other keys are not started", base: jobURL + " rescue.ssh=/keys", job: "rescue.ssh=/other" + fix,
			want:  []string{"drivers", "disks", "network", "ssh:/keys", "job", "reference", "target", "fix:/dev/sdb", "verify:/dev/sdb"},
			steps: "drivers=ok disks=ok network=ok ssh=ok job=ok ssh=warning reference=ok target=ok fix=ok verify=ok"},
		{name: "command line's server failed: the job's keys get their chance", base: jobURL + " rescue.ssh=/keys", job: "rescue.ssh=/other" + fix,
			fail:  map[string]error{"ssh:/keys": errors.New("no such file")},
			want:  []string{"drivers", "disks", "network", "ssh:/keys", "job", "ssh:/other", "reference", "target", "fix:/dev/sdb", "verify:/dev/sdb"},
			steps: "drivers=ok disks=ok network=ok ssh=warning job=ok ssh=ok reference=ok target=ok fix=ok verify=ok"},
		{name: "no job: no ssh", base: jobURL,
			want:  []string{"drivers", "disks", "network", "job"},
			steps: "drivers=ok disks=ok network=ok job=ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &jobMachine{fakeMachine: fakeMachine{fail: tc.fail, target: "/dev/sdb"}, base: tc.base, job: tc.job}
			rep := report.New("test")
			con := &logConsole{}
			out := Run(context.Background(), parse(t, tc.base), m, con, rep)
			if !reflect.DeepEqual(m.calls, tc.want) {
				t.Errorf("calls %v, want %v", m.calls, tc.want)
			}
			if out.Err != nil {
				t.Errorf("Err = %v", out.Err)
			}
			var steps []string
			for _, s := range rep.Steps {
				steps = append(steps, s.Name+"="+s.Status)
			}
			if got := strings.Join(steps, " "); got != tc.steps {
				t.Errorf("report steps %q, want %q\n%s", got, tc.steps, strings.Join(con.lines, "\n"))
			}
			if strings.Contains(tc.steps, "ssh=ok") && rep.Found[StepSSH] == nil {
				t.Errorf("the SSH server's details are not in the report's found.ssh")
			}
		})
	}
}
