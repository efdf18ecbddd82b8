package tui

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/esxi-rescue/rescue/gpt"
)

// newInput is a one-line text field with a steady cursor (a blinking one
// would redraw the screen twice a second over a slow serial line).
func newInput(m *Model, placeholder string) textinput.Model {
	in := textinput.New()
	in.Prompt = "> "
	in.Placeholder = placeholder
	in.CharLimit = 1024
	in.Width = max(m.w-4, 20)
	in.Cursor.SetMode(cursor.CursorStatic)
	in.Cursor.Style = m.st.cursor()
	in.PlaceholderStyle = m.st.cursor().UnsetReverse()
	in.Focus()
	return in
}

// inputView renders a field; without colour the cursor is an underscore.
func inputView(m *Model, in textinput.Model) string {
	if m.st.color {
		return in.View()
	}
	v := []rune(in.Value())
	p := min(in.Position(), len(v))
	return in.Prompt + string(v[:p]) + "_" + string(v[p:])
}

// taskCtx is what a running task may use.
type taskCtx struct {
	ctx      context.Context
	progress func(Progress)
}

type taskProgressMsg struct {
	t *task
	p Progress
}

type taskDoneMsg struct {
	t    *task
	text string
	kind kind
	err  error
}

// task runs work in the background, shows its progress bar, and then
// its summary.
type task struct {
	what    string
	start   time.Time
	ch      chan tea.Msg
	cancel  context.CancelFunc
	prog    *Progress
	done    bool
	summary string
	kind    kind
	err     error
	elapsed time.Duration
}

// startTask pushes a task screen running work.
func (m *Model) startTask(what string, work func(*taskCtx) (string, kind, error)) tea.Cmd {
	ctx, cancel := context.WithCancel(m.ctx)
	t := &task{what: what, start: m.b.now(), ch: make(chan tea.Msg, 4), cancel: cancel}
	m.push(t)
	tc := &taskCtx{ctx: ctx, progress: func(p Progress) {
		select {
		case t.ch <- taskProgressMsg{t, p}:
		default: // the screen is behind: drop this one, the next comes soon
		}
	}}
	go func() {
		text, k, err := work(tc)
		t.ch <- taskDoneMsg{t, text, k, err}
	}()
	return t.wait()
}

func (t *task) wait() tea.Cmd {
	return func() tea.Msg { return <-t.ch }
}

// esc leaves a finished task (a running one keeps its screen).
func (t *task) esc(m *Model) tea.Cmd {
	if t.done {
		return m.home()
	}
	m.flash = "still working: press c to cancel"
	return nil
}

func (t *task) title() string { return t.what }
func (t *task) keys() string {
	if t.done {
		return "Enter/Esc back to home"
	}
	return "c cancel (the disk keeps its old partition table)"
}

func (t *task) update(m *Model, msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case taskProgressMsg:
		if msg.t == t {
			p := msg.p
			t.prog = &p
			return t.wait()
		}
	case taskDoneMsg:
		if msg.t == t {
			t.done, t.summary, t.kind, t.err, t.elapsed = true, msg.text, msg.kind, msg.err, m.b.now().Sub(t.start)
			t.cancel()
			return m.scan()
		}
	case tea.KeyMsg:
		switch {
		case t.done && msg.String() == "enter":
			return m.home()
		case !t.done && msg.String() == "c":
			t.cancel()
			m.flash = "cancelling..."
		}
	}
	return nil
}

func (t *task) body(m *Model) ([]line, int) {
	var ls []line
	if !t.done {
		ls = append(ls, line{fmt.Sprintf("%s... (%s)", capitalize(t.what), m.b.now().Sub(t.start).Round(time.Second)), kHead})
		if t.prog != nil {
			ls = append(ls, line{"", kPlain})
			ls = append(ls, progressLines(m.w, *t.prog)...)
		}
		return ls, -1
	}
	if t.err != nil {
		ls = append(ls, line{fmt.Sprintf("FAILED after %s", t.elapsed.Round(100*time.Millisecond)), kBad})
		ls = append(ls, m.wrap(t.err.Error(), 0, kBad)...)
	} else {
		ls = append(ls, line{fmt.Sprintf("Done in %s", t.elapsed.Round(100*time.Millisecond)), kOK})
	}
	if t.summary != "" {
		ls = append(ls, line{"", kPlain})
		ls = append(ls, m.wrap(t.summary, 0, t.kind)...)
	}
	return ls, -1
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// progressLines draws the bar and "1.2 GiB of 16.0 GiB, 45.0 MiB/s, 5:10 left".
func progressLines(w int, p Progress) []line {
	bw := max(w-8, 10)
	pct := -1
	if p.Total > 0 {
		pct = int(p.Done * 100 / p.Total)
	}
	bar := "[" + strings.Repeat("?", bw) + "]"
	if pct >= 0 {
		n := int(int64(bw) * p.Done / p.Total)
		bar = "[" + strings.Repeat("#", n) + strings.Repeat("-", bw-n) + fmt.Sprintf("] %3d%%", pct)
	}
	s := p.Label + ": " + gpt.HumanBytes(p.Done)
	if p.Total > 0 {
		s += " of " + gpt.HumanBytes(p.Total)
	}
	s += fmt.Sprintf(", %s/s", gpt.HumanBytes(int64(p.Rate)))
	if p.ETA > 0 {
		e := p.ETA.Round(time.Second)
		s += fmt.Sprintf(", %d:%02d left", int(e.Minutes()), int(e.Seconds())%60)
	}
	return []line{{bar, kOK}, {s, kPlain}}
}
