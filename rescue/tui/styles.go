package tui

import (
	"io"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
)

// styles colours the lines. The colour profile is fixed (16 ANSI colours
// or none), never asked of the terminal: a query over a serial line would
// wait for an answer that may not come.
type styles struct {
	color bool
	r     *lipgloss.Renderer
	by    map[kind]lipgloss.Style
}

func newStyles(color bool) styles {
	r := lipgloss.NewRenderer(io.Discard, termenv.WithProfile(termenv.Ascii))
	r.SetHasDarkBackground(true)
	st := styles{color: color, r: r, by: map[kind]lipgloss.Style{}}
	if !color {
		return st
	}
	r.SetColorProfile(termenv.ANSI)
	st.by[kTitle] = r.NewStyle().Reverse(true).Bold(true)
	st.by[kHead] = r.NewStyle().Bold(true)
	st.by[kSel] = r.NewStyle().Reverse(true)
	st.by[kOK] = r.NewStyle().Foreground(lipgloss.Color("2"))
	st.by[kInfo] = r.NewStyle().Foreground(lipgloss.Color("6"))
	st.by[kWarn] = r.NewStyle().Foreground(lipgloss.Color("3")).Bold(true)
	st.by[kBad] = r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true)
	st.by[kDim] = r.NewStyle().Faint(true)
	return st
}

// render styles one line (already fitted to the width).
func (st styles) render(k kind, s string) string {
	if !st.color || s == "" {
		return s
	}
	if sty, ok := st.by[k]; ok {
		return sty.Render(s)
	}
	return s
}

// cursor is the style of a text field's cursor.
func (st styles) cursor() lipgloss.Style { return st.r.NewStyle().Reverse(true) }
