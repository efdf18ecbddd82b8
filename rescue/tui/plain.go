package tui

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/muesli/cancelreader"
)

// texter is a screen waiting for typed text (a field or a device name):
// in the plain menu the whole line goes into the field; more reports
// whether further fields follow (the line then moves to the next one).
type texter interface {
	field() (in *textinput.Model, more bool)
}

func (c *confirmFix) field() (*textinput.Model, bool) { return &c.in, false }

func (c *copyFlow) field() (*textinput.Model, bool) {
	switch {
	case c.isList():
		return nil, false
	case c.isConfirm():
		return &c.in, false
	}
	return &c.form.fields[c.form.cur].in, c.form.cur < len(c.form.fields)-1
}

func (n *network) field() (*textinput.Model, bool) {
	if n.step != 2 {
		return nil, false
	}
	return &n.form.fields[n.form.cur].in, n.form.cur < len(n.form.fields)-1
}

// Plain runs the interface as a numbered plain-text menu on a dumb
// terminal: each page is printed as lines of text (no escape codes),
// and each line typed is a choice (a number or letter shown in [ ]),
// a field's text, or 0 to go back. It drives the same screens as the
// full-screen interface.
func Plain(m *Model, in io.Reader, out io.Writer) Result {
	r := bufio.NewReader(in)
	p := &plain{m: m, out: out}
	p.run(m.Init())
	for !m.done {
		p.page()
		text, err := r.ReadString('\n')
		if errors.Is(err, cancelreader.ErrCanceled) {
			return Result{} // Run ended it: a choice made on another terminal
		}
		if err != nil && text == "" {
			fmt.Fprintln(out, "input closed: starting the shell")
			return Result{Action: ActShell}
		}
		text = strings.TrimRight(text, "\r\n")
		for _, msg := range p.keys(text) {
			_, cmd := m.Update(msg)
			p.run(cmd)
			if m.done {
				break
			}
		}
	}
	return m.result
}

type plain struct {
	m    *Model
	out  io.Writer
	last time.Time
}

// keys turns a typed line into key presses.
func (p *plain) keys(text string) []tea.Msg {
	t := strings.TrimSpace(text)
	if t == "0" || strings.EqualFold(t, "esc") {
		return []tea.Msg{tea.KeyMsg{Type: tea.KeyEsc}}
	}
	if tx, ok := p.m.top().(texter); ok {
		if f, more := tx.field(); f != nil {
			f.SetValue(t)
			if more {
				return []tea.Msg{tea.KeyMsg{Type: tea.KeyTab}}
			}
			return []tea.Msg{tea.KeyMsg{Type: tea.KeyEnter}}
		}
	}
	if t == "" {
		return []tea.Msg{tea.KeyMsg{Type: tea.KeyEnter}}
	}
	return []tea.Msg{tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(t)}}
}

// run executes commands the way bubbletea would, one after the other.
func (p *plain) run(cmd tea.Cmd) {
	for cmd != nil {
		msg := cmd()
		switch msg := msg.(type) {
		case nil:
			return
		case tea.QuitMsg:
			return
		case tea.BatchMsg:
			for _, c := range msg {
				p.run(c)
			}
			return
		case taskProgressMsg:
			if time.Since(p.last) >= 2*time.Second {
				p.last = time.Now()
				ls := progressLines(p.m.w, msg.p)
				fmt.Fprintf(p.out, "%s  %s\n", strings.TrimSpace(ls[0].text[strings.LastIndex(ls[0].text, "]")+1:]), ls[1].text)
			}
		}
		_, cmd = p.m.Update(msg)
	}
}

// page prints the current screen and the prompt.
func (p *plain) page() {
	m := p.m
	s := m.top()
	lines, _ := s.body(m)
	fmt.Fprintf(p.out, "\n== ESXi rescue %s | %s ==\n", m.version, s.title())
	for _, l := range lines {
		t := l.text
		if l.kind == kSel {
			t = strings.Replace(t, "> ", "  ", 1)
		}
		fmt.Fprintln(p.out, strings.TrimRight(t, " "))
	}
	if m.flash != "" {
		fmt.Fprintln(p.out, "!! "+m.flash)
	}
	prompt := "Type the number or letter shown in [ ] and Enter (0 = back): "
	if tx, ok := s.(texter); ok {
		if f, _ := tx.field(); f != nil {
			prompt = "Type the text and Enter (0 = back): "
		}
	}
	switch s.(type) {
	case *diskScreen:
		prompt = "f = Fix, 0 = back: "
	case *yesNo:
		prompt = "y = yes, n = no: "
	case *task:
		prompt = "Enter = back to home: "
	}
	fmt.Fprintln(p.out, strings.TrimSpace(prompt))
	fmt.Fprint(p.out, "> ")
}
