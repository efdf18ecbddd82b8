// Package tui is the rescue system's guided screen for the person at the
// server: a home screen with the hardware report (disks with a verdict in
// plain words, NICs, missing drivers, the network state) and the actions
// — per disk the slot-by-slot table, the boot-bank report and gptfix's
// plan with a Fix that needs the device name typed; Restore and Back up
// with a progress bar; Network; Boot ESXi; Shell; Reboot; Power off.
//
// It is a bubbletea program (model.go: the frame and navigation; one
// file per screen) that works from 80×24 up, with or without colour,
// keyboard only; on a TERM=dumb console a numbered plain-text menu
// (plain.go) does the same with no escape codes. All disk work is done by
// Backend through the project's packages.
package tui

import (
	"context"
	"fmt"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/mattn/go-runewidth"
)

// Action is what the person chose that ends the screen.
type Action int

// The actions that leave the screen.
const (
	ActNone     Action = iota
	ActShell           // start the shell
	ActReboot          // restart the machine
	ActPowerOff        // power it off
	ActBoot            // kexec into ESXi on Result.Disk
)

func (a Action) String() string {
	return [...]string{"none", "shell", "reboot", "poweroff", "boot"}[a]
}

// Result is how the screen ended.
type Result struct {
	Action Action
	Disk   string // ActBoot: the disk to boot
}

// Default screen size when the terminal does not tell (serial lines).
const (
	DefaultWidth  = 80
	DefaultHeight = 24
)

// kind is how a line is styled.
type kind int

const (
	kPlain kind = iota
	kHead       // section heading
	kOK
	kInfo
	kWarn
	kBad
	kDim
	kSel   // the selected list item
	kTitle // the title bar
)

// line is one line of a screen's body, already fitted to the width.
type line struct {
	text string
	kind kind
}

// screen is one page of the interface.
type screen interface {
	title() string
	keys() string // the help line
	// update handles a message; the screen may push or pop screens on m.
	update(m *Model, msg tea.Msg) tea.Cmd
	// body renders the page; focus is the line to keep visible (-1: the
	// page scrolls freely with the arrow keys).
	body(m *Model) (lines []line, focus int)
}

// escer is a screen that handles Esc itself (default: back one screen).
type escer interface{ esc(m *Model) tea.Cmd }

// Model is the bubbletea model of the whole interface.
type Model struct {
	b       *Backend
	version string
	st      styles
	w, h    int
	ctx     context.Context

	hw      *Hardware
	scanErr string
	stack   []screen
	offs    []int // scroll offset per screen in stack
	flash   string
	result  Result
	done    bool
	// chose, when set, is told the choice that ends the screen as soon
	// as it is made (Run: before bubbletea has even begun to tear down).
	chose func(Result)
}

// New returns the interface's model. color turns on ANSI colours (16
// colours, which VGA and serial terminals have); without it only the
// ">" marker and plain text show the selection.
func New(ctx context.Context, b *Backend, version string, color bool) *Model {
	m := &Model{b: b, version: version, st: newStyles(color), w: DefaultWidth, h: DefaultHeight, ctx: ctx}
	m.push(&home{})
	return m
}

// Result is how the screen ended (after the program quit).
func (m *Model) Result() Result { return m.result }

type scanMsg struct {
	hw  *Hardware
	err error
}

func (m *Model) scan() tea.Cmd {
	return func() tea.Msg {
		hw, err := m.b.Scan()
		return scanMsg{hw, err}
	}
}

// Init starts the first scan.
func (m *Model) Init() tea.Cmd { return m.scan() }

func (m *Model) push(s screen) {
	m.stack = append(m.stack, s)
	m.offs = append(m.offs, 0)
	m.flash = ""
}

func (m *Model) pop() {
	if len(m.stack) > 1 {
		m.stack = m.stack[:len(m.stack)-1]
		m.offs = m.offs[:len(m.offs)-1]
	}
	m.flash = ""
}

// home pops back to the home screen and scans again; until the scan is
// back the home screen says so rather than show what was there before.
func (m *Model) home() tea.Cmd {
	m.stack, m.offs = m.stack[:1], m.offs[:1]
	m.hw, m.flash = nil, ""
	return m.scan()
}

func (m *Model) top() screen { return m.stack[len(m.stack)-1] }

// quit ends the program with r.
func (m *Model) quit(r Result) tea.Cmd {
	m.result, m.done = r, true
	if m.chose != nil {
		m.chose(r)
	}
	return tea.Quit
}

// Update handles a message.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.w, m.h = msg.Width, msg.Height
		if m.w <= 0 || m.h <= 0 {
			m.w, m.h = DefaultWidth, DefaultHeight
		}
		return m, nil
	case scanMsg:
		m.hw, m.scanErr = msg.hw, ""
		if msg.err != nil {
			m.scanErr = msg.err.Error()
		}
		return m, nil
	case tea.KeyMsg:
		_, focus := m.top().body(m)
		if focus < 0 {
			switch msg.String() {
			case "up", "k":
				m.scroll(-1)
				return m, nil
			case "down", "j":
				m.scroll(1)
				return m, nil
			}
		}
		switch msg.String() {
		case "pgup":
			m.scroll(-(m.bodyHeight() - 1))
			return m, nil
		case "pgdown", " ":
			if focus < 0 {
				m.scroll(m.bodyHeight() - 1)
				return m, nil
			}
		case "ctrl+l":
			return m, tea.ClearScreen
		case "esc":
			if e, ok := m.top().(escer); ok {
				return m, e.esc(m)
			}
			m.pop()
			return m, nil
		}
	}
	return m, m.top().update(m, msg)
}

func (m *Model) bodyHeight() int { return max(m.h-3, 1) }

func (m *Model) scroll(n int) {
	i := len(m.offs) - 1
	lines, _ := m.top().body(m)
	m.offs[i] = max(0, min(m.offs[i]+n, len(lines)-m.bodyHeight()))
}

// View draws the frame: title line, the page, a status line, the keys.
func (m *Model) View() string {
	if m.done {
		return ""
	}
	s := m.top()
	lines, focus := s.body(m)
	bh := m.bodyHeight()
	i := len(m.offs) - 1
	off := m.offs[i]
	if focus >= 0 {
		if focus < off {
			off = focus
		}
		if focus >= off+bh {
			off = focus - bh + 1
		}
	}
	off = max(0, min(off, len(lines)-bh))
	m.offs[i] = off
	var b strings.Builder
	title := fmt.Sprintf(" ESXi rescue %s | %s", m.version, s.title())
	more := ""
	if len(lines) > bh {
		more = fmt.Sprintf("  lines %d-%d of %d ", off+1, min(off+bh, len(lines)), len(lines))
	}
	tw := m.w - runewidth.StringWidth(more)
	b.WriteString(m.st.render(kTitle, pad(pad(fit(title, tw), tw)+more, m.w)))
	b.WriteByte('\n')
	for j := 0; j < bh; j++ {
		if off+j < len(lines) {
			l := lines[off+j]
			b.WriteString(m.st.render(l.kind, fit(l.text, m.w)))
		}
		b.WriteByte('\n')
	}
	b.WriteString(m.st.render(kWarn, fit(m.flash, m.w)))
	b.WriteByte('\n')
	b.WriteString(m.st.render(kDim, fit(s.keys(), m.w)))
	return b.String()
}

// fit cuts s to at most w columns.
func fit(s string, w int) string {
	if runewidth.StringWidth(s) <= w {
		return s
	}
	return runewidth.Truncate(s, w, "")
}

func pad(s string, w int) string {
	if n := runewidth.StringWidth(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}

// wrap fits text into lines of the screen width, each indented by
// indent spaces; a paragraph's own leading spaces are kept, and its
// continuation lines are indented two more.
func (m *Model) wrap(text string, indent int, k kind) []line {
	var out []line
	for _, para := range strings.Split(strings.ReplaceAll(text, "\t", "    "), "\n") {
		body := strings.TrimLeft(para, " ")
		lead := indent + len(para) - len(body)
		if runewidth.StringWidth(body) <= m.w-lead {
			out = append(out, line{strings.Repeat(" ", lead) + body, k})
			continue
		}
		for i, l := range wrapWords(body, max(m.w-lead, 20), max(m.w-lead-2, 18)) {
			n := lead
			if i > 0 {
				n += 2
			}
			out = append(out, line{strings.Repeat(" ", n) + l, k})
		}
	}
	return out
}

// wrapWords breaks s at spaces into lines of at most first (then rest)
// columns; a word longer than a line is cut.
func wrapWords(s string, first, rest int) []string {
	var out []string
	cur, w := "", first
	// Split at single spaces: runs of spaces (aligned columns) stay.
	for _, word := range strings.Split(s, " ") {
		for runewidth.StringWidth(word) > w {
			if cur != "" {
				out, cur, w = append(out, cur), "", rest
				continue
			}
			head := runewidth.Truncate(word, w, "")
			out, word, w = append(out, head), word[len(head):], rest
		}
		switch {
		case cur == "" && len(out) > 0 && word == "":
			// no spaces at the start of a continuation line
		case cur == "":
			cur = word
		case runewidth.StringWidth(cur)+1+runewidth.StringWidth(word) <= w:
			cur += " " + word
		default:
			out, cur, w = append(out, cur), word, rest
		}
	}
	return append(out, cur)
}

// item is one entry of a list: a disk or an action.
type item struct {
	key   string // the letter that chooses it directly, "" none
	label string
	sub   string // a second, wrapped line (a disk's verdict)
	kind  kind   // of the sub line
	run   func(m *Model) tea.Cmd
}

// list is a selectable list of items with a text above it.
type list struct {
	cur int
}

// move handles the arrow keys and letters of a list; chosen is the item
// run (-1 none).
func (l *list) handle(m *Model, items []item, msg tea.Msg) tea.Cmd {
	k, ok := msg.(tea.KeyMsg)
	if !ok || len(items) == 0 {
		return nil
	}
	l.cur = max(0, min(l.cur, len(items)-1))
	switch k.String() {
	case "up", "k", "shift+tab":
		l.cur = (l.cur + len(items) - 1) % len(items)
	case "down", "j", "tab":
		l.cur = (l.cur + 1) % len(items)
	case "home":
		l.cur = 0
	case "end":
		l.cur = len(items) - 1
	case "enter":
		if items[l.cur].run != nil {
			return items[l.cur].run(m)
		}
	default:
		for i, it := range items {
			if it.key != "" && k.String() == it.key {
				l.cur = i
				if it.run != nil {
					return it.run(m)
				}
			}
		}
	}
	return nil
}

// render appends items (the list's entries from index base on) to
// lines; it returns the lines and the line of the selected item (-1 when
// it is not among these).
func (l *list) render(m *Model, lines []line, items []item, base int) ([]line, int) {
	focus := -1
	for i, it := range items {
		mark := "  "
		k := kPlain
		if base+i == l.cur {
			mark, k, focus = "> ", kSel, len(lines)
		}
		key := "    "
		if it.key != "" {
			key = "[" + it.key + "] "
		}
		lines = append(lines, line{pad(mark+key+it.label, m.w), k})
		if it.sub != "" {
			lines = append(lines, m.wrap(it.sub, 8, it.kind)...)
		}
	}
	return lines, focus
}
