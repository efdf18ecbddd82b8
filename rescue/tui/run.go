package tui

import (
	"context"
	"errors"
	"os"
	"sync"

	tea "github.com/charmbracelet/bubbletea"
	"golang.org/x/sys/unix"
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

// Run shows the interface on every terminal at once (the VGA console and
// the serial console, say). The first one on which the person chooses
// to leave (shell, reboot, power off, boot) ends all of them; the other
// full-screen terminals are put back to normal first.
func Run(ctx context.Context, b *Backend, version string, terms []Terminal) (Result, error) {
	if len(terms) == 0 {
		return Result{}, errors.New("no terminal to show the screen on")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type outcome struct {
		r   Result
		err error
	}
	results := make(chan outcome, len(terms))
	var progs []*tea.Program
	var wg sync.WaitGroup
	for _, t := range terms {
		m := New(ctx, b, version, t.Color)
		if t.Plain {
			go func(t Terminal) { results <- outcome{Plain(m, t.In, t.Out), nil} }(t)
			continue
		}
		ensureSize(t.Out)
		p := tea.NewProgram(m, tea.WithInput(t.In), tea.WithOutput(t.Out), tea.WithAltScreen(), tea.WithContext(ctx))
		progs = append(progs, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Run()
			if errors.Is(err, tea.ErrProgramKilled) {
				err = nil
			}
			results <- outcome{m.Result(), err}
		}()
	}
	// A terminal that fails (no VGA behind /dev/tty0, say) leaves the
	// others running.
	var first outcome
	var errs []error
	for range terms {
		first = <-results
		if first.r.Action != ActNone {
			break
		}
		if first.err != nil {
			errs = append(errs, first.err)
		}
	}
	for _, p := range progs {
		p.Quit()
	}
	wg.Wait()
	if first.r.Action == ActNone {
		return first.r, errors.Join(errs...)
	}
	return first.r, nil
}
