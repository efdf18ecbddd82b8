package tui

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// ptyTerm is one terminal of a Run test: the program's side (tty) and
// the person's side (the pty master, read all the time into out, as a
// terminal would).
type ptyTerm struct {
	ptmx, tty *os.File
	saved     *unix.Termios // the tty's modes before Run

	mu  sync.Mutex
	out bytes.Buffer
}

func newPtyTerm(t *testing.T) *ptyTerm { return openPtyTerm(t, true) }

// openPtyTerm opens a pty; closed at the end of the test unless a
// screen left behind may still use it.
func openPtyTerm(t *testing.T, closeAtEnd bool) *ptyTerm {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	if closeAtEnd {
		t.Cleanup(func() { ptmx.Close(); tty.Close() })
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: DefaultHeight, Cols: DefaultWidth}); err != nil {
		t.Fatal(err)
	}
	st, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	p := &ptyTerm{ptmx: ptmx, tty: tty, saved: st}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := ptmx.Read(b)
			p.mu.Lock()
			p.out.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return p
}

func (p *ptyTerm) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait waits until the output (from byte from on) matches re; it returns
// the end of the match.
func (p *ptyTerm) wait(t *testing.T, from int, re string) int {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out := p.output()
		if loc := rx.FindStringIndex(out[from:]); loc != nil {
			return from + loc[1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %q on the terminal after 20s; it shows:\n%q", re, p.output()[from:])
	return 0
}

func (p *ptyTerm) send(t *testing.T, s string) {
	t.Helper()
	if _, err := p.ptmx.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// restored fails unless the tty is back in the modes it had before Run
// (cooked: canonical input with echo).
func (p *ptyTerm) restored(t *testing.T, name string) {
	t.Helper()
	st, err := unix.IoctlGetTermios(int(p.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if st.Lflag&(unix.ICANON|unix.ECHO) != unix.ICANON|unix.ECHO || *st != *p.saved {
		t.Errorf("terminal %s not restored after Run: lflag %#x iflag %#x oflag %#x, before %#x %#x %#x",
			name, st.Lflag, st.Iflag, st.Oflag, p.saved.Lflag, p.saved.Iflag, p.saved.Oflag)
	}
	p.wait(t, 0, regexp.QuoteMeta("\x1b[?1049l")) // left the alternate screen
}

// keptOpen are files open to the end of the test process.
var keptOpen []*os.File

var (
	runFixtureOnce sync.Once
	runFixtureDir  string
	runFixtureErr  error
)

// runBackend is a backend on two blank disk images, shared by the Run
// tests (which look at the terminals, not at the disks).
func runBackend(t *testing.T) *Backend {
	t.Helper()
	runFixtureOnce.Do(func() {
		runFixtureDir, runFixtureErr = os.MkdirTemp("", "tui-run-")
		for _, n := range []string{"sda.img", "sdb.img"} {
			if runFixtureErr == nil {
				f, err := os.Create(filepath.Join(runFixtureDir, n))
				if err == nil {
					err = f.Truncate(1 << 30)
					f.Close()
				}
				runFixtureErr = err
			}
		}
	})
	if runFixtureErr != nil {
		t.Fatal(runFixtureErr)
	}
	return &Backend{Files: []string{filepath.Join(runFixtureDir, "sda.img"), filepath.Join(runFixtureDir, "sdb.img")},
		KexecAllowed: func() error { return nil }}
}

type runOutcome struct {
	r   Result
	err error
}

// startRun runs Run on terms in the background.
func startRun(t *testing.T, terms []Terminal) <-chan runOutcome {
	t.Helper()
	done := make(chan runOutcome, 1)
	b := runBackend(t)
	go func() {
		r, err := Run(context.Background(), b, "test", terms)
		done <- runOutcome{r, err}
	}()
	return done
}

// ended waits for Run to return; a Run that hangs fails the test with
// the goroutines' stacks.
func ended(t *testing.T, done <-chan runOutcome, within time.Duration) runOutcome {
	t.Helper()
	select {
	case o := <-done:
		return o
	case <-time.After(within):
		buf := make([]byte, 1<<20)
		t.Fatalf("Run did not return within %v after the choice:\n%s", within, buf[:runtime.Stack(buf, true)])
	}
	return runOutcome{}
}

// TestRunTwoTerminals: the screen on two terminals at once (the serial
// console and the VGA console). The person chooses on either one; Run
// returns that choice promptly, and both terminals are back in cooked
// mode, out of the alternate screen.
func TestRunTwoTerminals(t *testing.T) {
	for _, tc := range []struct {
		name string
		on   int // the terminal the person types on
		keys []string
		want Result
	}{
		{"power off on the first", 0, []string{"p", "y"}, Result{Action: ActPowerOff}},
		{"power off on the second", 1, []string{"p", "y"}, Result{Action: ActPowerOff}},
		{"reboot on the second", 1, []string{"b", "y"}, Result{Action: ActReboot}},
		{"shell on the first", 0, []string{"s"}, Result{Action: ActShell}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pts := []*ptyTerm{newPtyTerm(t), newPtyTerm(t)}
			var terms []Terminal
			for i, p := range pts {
				terms = append(terms, Terminal{Name: []string{"ttyS0", "tty0"}[i], In: p.tty, Out: p.tty})
			}
			done := startRun(t, terms)
			// Both show the home screen with the scan done.
			for _, p := range pts {
				p.wait(t, 0, `\[p\] Power off`)
				p.wait(t, 0, `sdb\.img`)
			}
			p := pts[tc.on]
			at := len(p.output())
			for i, k := range tc.keys {
				p.send(t, k)
				if i < len(tc.keys)-1 {
					at = p.wait(t, at, `Press y to go ahead`)
				}
			}
			o := ended(t, done, 10*time.Second)
			if o.err != nil {
				t.Errorf("Run: %v", o.err)
			}
			if o.r != tc.want {
				t.Errorf("Run = %+v, want %+v", o.r, tc.want)
			}
			for i, p := range pts {
				p.restored(t, terms[i].Name)
			}
			// The other terminal says what was chosen where.
			other := pts[1-tc.on]
			other.wait(t, 0, regexp.QuoteMeta("screen: closed here: "+tc.want.Action.String()+" chosen on "+terms[tc.on].Name))
		})
	}
}

// TestRunPlainBeside: a plain-menu terminal beside a full screen; a
// choice on the full screen ends the plain menu too (its blocked read
// is cancelled), and the plain terminal says what was chosen.
func TestRunPlainBeside(t *testing.T) {
	full, pl := newPtyTerm(t), newPtyTerm(t)
	terms := []Terminal{{Name: "tty0", In: full.tty, Out: full.tty}, {Name: "ttyS0", In: pl.tty, Out: pl.tty, Plain: true}}
	done := startRun(t, terms)
	pl.wait(t, 0, `\[p\] Power off`)
	at := full.wait(t, 0, `sdb\.img`)
	full.send(t, "p")
	full.wait(t, at, `Press y to go ahead`)
	full.send(t, "y")
	o := ended(t, done, 10*time.Second)
	if o.err != nil || o.r.Action != ActPowerOff {
		t.Errorf("Run = %+v, %v; want poweroff, no error", o.r, o.err)
	}
	full.restored(t, "tty0")
	pl.wait(t, 0, `screen: closed here: poweroff chosen on tty0`)
	if strings.Contains(pl.output(), "\x1b") {
		t.Error("escape codes on the plain terminal")
	}
}

// TestRunBlockedTerminal: a terminal whose output never drains (a
// serial line nobody reads, with flow control) blocks its screen in a
// write for ever. A choice on the other terminal still ends Run within
// the bound, with the choice and an error naming the terminal left
// behind, and that terminal's modes put back.
func TestRunBlockedTerminal(t *testing.T) {
	// The stuck terminal and its pipe stay open to the end of the
	// process: the screen left behind is still blocked in a write there.
	good, stuck := newPtyTerm(t), openPtyTerm(t, false)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	keptOpen = append(keptOpen, r, w, stuck.tty, stuck.ptmx) // not even by the GC's finalizers
	fd := int(w.Fd())                                        // (Fd puts the file in blocking mode: take it once)
	unix.SetNonblock(fd, true)
	for { // fill the pipe: the next write blocks
		if _, err := unix.Write(fd, make([]byte, 4096)); err != nil {
			break
		}
	}
	unix.SetNonblock(fd, false)
	terms := []Terminal{{Name: "ttyS0", In: good.tty, Out: good.tty}, {Name: "ttyS1", In: stuck.tty, Out: w}}
	done := startRun(t, terms)
	at := good.wait(t, 0, `sdb\.img`)
	good.send(t, "p")
	good.wait(t, at, `Press y to go ahead`)
	start := time.Now()
	good.send(t, "y")
	o := ended(t, done, quitWait+killWait+5*time.Second)
	if o.r.Action != ActPowerOff {
		t.Errorf("Run = %+v, want poweroff", o.r)
	}
	if !errors.Is(o.err, ErrLeftBehind) || !strings.Contains(o.err.Error(), "ttyS1") || strings.Contains(o.err.Error(), "ttyS0") {
		t.Errorf("Run error = %v, want ttyS1 (only) left behind", o.err)
	}
	if d := time.Since(start); d > quitWait+killWait+2*time.Second {
		t.Errorf("Run took %v after the choice", d)
	}
	good.restored(t, "ttyS0")
	st, err := unix.IoctlGetTermios(int(stuck.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *st != *stuck.saved {
		t.Errorf("the left-behind terminal's modes not put back: lflag %#x, was %#x", st.Lflag, stuck.saved.Lflag)
	}
}
