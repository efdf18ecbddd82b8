package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/muesli/cancelreader"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Terminal is one console the interface runs on.
type Terminal struct {
	Name    string
	In, Out *os.File
	Plain   bool // a dumb terminal: the numbered plain-text menu
	Color   bool // ANSI colours
}

// ModeFor decides from TERM and NO_COLOR how a terminal is driven: the
// plain menu on "dumb" (and on "unknown" or an empty TERM with no
// terminal at all), no colour on VT100-class terminals or with NO_COLOR.
func ModeFor(term string, noColor bool) (plain, color bool) {
	switch term {
	case "dumb":
		return true, false
	case "vt52", "vt100", "vt102", "vt220", "vt320":
		return false, false
	}
	return false, !noColor
}

// ensureSize gives a terminal that reports no size (a serial line) the
// default 80x24, so that the screen is laid out for the smallest
// terminal it supports.
func ensureSize(f *os.File) {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || (ws.Row > 0 && ws.Col > 0) {
		return
	}
	unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: DefaultHeight, Col: DefaultWidth})
}

// How long Run waits for the other terminals' screens to end once a
// choice is made: first for them to quit, then, killed, to give their
// terminals back. A screen still up after both (its output blocked: a
// serial line nobody reads with flow control on, say) is left behind,
// its terminal's modes put back by Run itself.
var (
	quitWait = 2 * time.Second
	killWait = time.Second
)

// ErrLeftBehind is wrapped in the error Run returns, with the choice,
// when a terminal's screen did not end in time and was left behind.
var ErrLeftBehind = errors.New("did not end in time; left behind with its terminal reset")

// screenOn is one terminal's running screen.
type screenOn struct {
	t     Terminal
	p     *tea.Program              // full screen; nil for the plain menu
	cr    cancelreader.CancelReader // plain menu: its input, cancelled at the end
	saved *term.State               // the terminal's modes before the screen
	ended chan struct{}             // closed when the screen has returned
	res   Result
	err   error
}

// Run shows the interface on every terminal at once (the VGA console and
// the serial console, say). The first one on which the person chooses
// to leave (shell, reboot, power off, boot) ends all of them: Run learns
// the choice from the model the moment it is made, quits the other
// screens (their input readers are cancelled, their terminals put back
// to normal and told what was chosen where), and returns within
// quitWait+killWait whatever the terminals do. A terminal that fails
// (no VGA behind /dev/tty0, say) leaves the others running.
func Run(ctx context.Context, b *Backend, version string, terms []Terminal) (Result, error) {
	if len(terms) == 0 {
		return Result{}, errors.New("no terminal to show the screen on")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type choice struct {
		r  Result
		on string
	}
	chosen := make(chan choice, len(terms))
	ended := make(chan *screenOn, len(terms))
	var screens []*screenOn
	for _, t := range terms {
		s := &screenOn{t: t, ended: make(chan struct{})}
		screens = append(screens, s)
		m := New(ctx, b, version, t.Color)
		m.chose = func(r Result) {
			select {
			case chosen <- choice{r, t.Name}:
			default: // never block a screen's event loop
			}
		}
		if t.Plain {
			var in io.Reader = t.In
			if cr, err := cancelreader.NewReader(t.In); err == nil {
				s.cr, in = cr, cr
			}
			go func() {
				s.res = Plain(m, in, t.Out)
				close(s.ended)
				ended <- s
			}()
			continue
		}
		s.saved, _ = term.GetState(int(t.In.Fd()))
		ensureSize(t.Out)
		s.p = tea.NewProgram(m, tea.WithInput(t.In), tea.WithOutput(t.Out), tea.WithAltScreen(), tea.WithContext(ctx))
		go func() {
			_, err := s.p.Run()
			if errors.Is(err, tea.ErrProgramKilled) {
				err = nil
			}
			if err != nil {
				err = fmt.Errorf("screen on %s: %w", t.Name, err)
			}
			s.res, s.err = m.Result(), err
			close(s.ended)
			ended <- s
		}()
	}
	var first choice
	var errs []error
wait:
	for left := len(screens); ; {
		select {
		case first = <-chosen:
			break wait
		case s := <-ended:
			left--
			if s.res.Action != ActNone {
				first = choice{s.res, s.t.Name}
				break wait
			}
			if s.err != nil {
				errs = append(errs, s.err)
			}
			if left == 0 {
				if len(errs) == 0 {
					errs = append(errs, errors.New("every screen ended with no choice"))
				}
				return Result{}, errors.Join(errs...)
			}
		}
	}
	return first.r, stopAll(screens, cancel, fmt.Sprintf("%s chosen on %s", first.r.Action, first.on))
}

// stopAll ends every screen still up after a choice: quit, then kill,
// then leave behind (see quitWait). The terminals whose screen ended are
// told what was chosen (said); the others get their modes back from
// their saved state.
func stopAll(screens []*screenOn, kill func(), said string) error {
	for _, s := range screens {
		if s.p != nil {
			go s.p.Quit() // blocks while the program is busy: never here
		}
		if s.cr != nil {
			s.cr.Cancel()
		}
	}
	allEnded := func(d time.Duration) bool {
		deadline := time.After(d)
		for _, s := range screens {
			select {
			case <-s.ended:
			case <-deadline:
				return false
			}
		}
		return true
	}
	if !allEnded(quitWait) {
		kill()
		allEnded(killWait)
	}
	var left []string
	for _, s := range screens {
		select {
		case <-s.ended:
			if s.cr != nil {
				s.cr.Close()
			}
			if s.res.Action == ActNone {
				fmt.Fprintf(s.t.Out, "\r\nscreen: closed here: %s\r\n", said)
			}
		default:
			left = append(left, s.t.Name)
			if s.saved != nil {
				term.Restore(int(s.t.In.Fd()), s.saved)
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("the screen on %s %w", strings.Join(left, ", "), ErrLeftBehind)
	}
	return nil
}
