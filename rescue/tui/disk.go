package tui

import (
	"fmt"
	"sort"
	"strings"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
)

// diskScreen shows one disk: verdict, the slot-by-slot table (now and
// after gptfix's plan), the boot-bank report and the plan, with Fix.
type diskScreen struct{ i int }

func (d *diskScreen) report(m *Model) *DiskReport {
	if m.hw == nil || d.i >= len(m.hw.Disks) {
		return nil
	}
	return &m.hw.Disks[d.i]
}

func (d *diskScreen) title() string { return "disk" }
func (d *diskScreen) keys() string  { return "f Fix  Up/Down/PgUp/PgDn scroll  Esc back" }

func (d *diskScreen) update(m *Model, msg tea.Msg) tea.Cmd {
	r := d.report(m)
	if k, ok := msg.(tea.KeyMsg); ok && r != nil && k.String() == "f" {
		switch {
		case r.Writable() != nil:
			m.flash = fmt.Sprintf("Not offered: %s %v.", r.Disk.Path, r.Writable())
		case r.Plan == nil:
			m.flash = "No plan: " + firstNonEmpty(r.PlanErr, r.Verdict)
		case r.Plan.Empty():
			m.flash = "Nothing to fix on " + r.Disk.Path + "."
		default:
			m.push(newConfirmFix(m, *r))
		}
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Command is the shell command that does what Fix does.
func fixCommand(r *DiskReport) string {
	if r.Match != nil {
		return "gptfix -esxi -yes " + r.Disk.Path
	}
	return "gptfix -yes " + r.Disk.Path
}

func (d *diskScreen) body(m *Model) ([]line, int) {
	r := d.report(m)
	if r == nil {
		return []line{{"The disk is gone (rescan from home).", kWarn}}, -1
	}
	var ls []line
	ls = append(ls, line{r.Disk.Describe(), kHead})
	ls = append(ls, m.wrap(r.Verdict, 0, kindOf(r.Health))...)
	switch {
	case r.Writable() != nil:
		ls = append(ls, m.wrap("Fix is not offered: "+r.Writable().Error()+".", 0, kDim)...)
	case r.Plan != nil && !r.Plan.Empty():
		ls = append(ls, line{"[f] Fix it now: the same as " + fixCommand(r), kSel})
	}
	if r.Table != nil {
		ls = append(ls, line{"", kPlain})
		ls = append(ls, slotTable(m, r)...)
	}
	if r.Boot != nil {
		ls = append(ls, line{"", kPlain}, line{"Boot banks (what ESXi's boot loader does with this disk)", kHead})
		ls = append(ls, m.wrap(r.Boot.Verdict, 2, okKind(r.Boot.OK))...)
		for _, b := range banks(r) {
			ls = append(ls, m.wrap(b.text, 2, b.kind)...)
		}
		for _, p := range r.Boot.Problems {
			if !strings.Contains(r.Boot.Verdict, p) {
				ls = append(ls, m.wrap("problem: "+p, 2, kWarn)...)
			}
		}
		if len(r.Boot.Loaders) > 0 {
			ls = append(ls, line{"Each boot loader generation would:", kPlain})
		}
		for _, l := range r.Boot.Loaders {
			mark, k := "", kPlain
			if l.Applies {
				mark, k = " <- the loader this disk's ESXi installed", kHead
			}
			ls = append(ls, m.wrap("- "+l.Text+mark, 2, k)...)
		}
		for _, w := range r.Boot.Warnings {
			ls = append(ls, m.wrap("warning: "+w, 2, kWarn)...)
		}
		for _, w := range r.Boot.WindowsSigns {
			ls = append(ls, m.wrap("Windows was here (harmless): "+w, 2, kDim)...)
		}
	}
	ls = append(ls, line{"", kPlain}, line{"Plan (gptfix)", kHead})
	switch {
	case r.Plan != nil:
		for _, l := range strings.Split(strings.TrimRight(r.Plan.String(), "\n"), "\n") {
			ls = append(ls, m.wrap(l, 2, kPlain)...)
		}
	case r.PlanErr != "":
		ls = append(ls, m.wrap("No plan: "+r.PlanErr, 2, kWarn)...)
	default:
		ls = append(ls, line{"  (no GPT to plan for)", kDim})
	}
	if r.Match != nil {
		ls = append(ls, line{"", kPlain}, line{"ESXi layout", kHead})
		ls = append(ls, m.wrap(r.Match.Text, 2, kPlain)...)
	}
	return ls, -1
}

func okKind(ok bool) kind {
	if ok {
		return kOK
	}
	return kBad
}

type bankLine struct {
	text string
	kind kind
}

func banks(r *DiskReport) []bankLine {
	var out []bankLine
	for _, b := range r.Boot.Banks {
		out = append(out, bankReport{BankReport: b, chosen: b.Slot == r.Boot.Chosen}.line())
	}
	for _, b := range r.Boot.Others {
		out = append(out, bankReport{BankReport: b, suffix: " (found by content)"}.line())
	}
	return out
}

type bankReport struct {
	esxi.BankReport
	suffix string
	chosen bool
}

func (b bankReport) line() bankLine {
	s := fmt.Sprintf("entry %d%s: ", b.Slot, b.suffix)
	k := kPlain
	switch {
	case !b.Present:
		s += "empty"
		k = kDim
	case b.Valid:
		s += fmt.Sprintf("boot bank, build %s, updated=%d", b.Build, b.Updated)
		k = kOK
	default:
		s += "not a usable boot bank: " + b.Reason
		k = kWarn
	}
	if b.chosen {
		s += " <- the loader boots this one"
	}
	return bankLine{s, k}
}

// slotTable is the slot-by-slot table: each used slot now and after the
// plan, marked where they differ (as gptdiff shows it).
func slotTable(m *Model, r *DiskReport) []line {
	after := map[int]gpt.Entry{}
	if r.Plan != nil {
		for _, s := range r.Plan.Slots() {
			if s.Used() {
				after[s.Index] = s.Entry()
			}
		}
	} else {
		after = r.Slots
	}
	var idx []int
	seen := map[int]bool{}
	for _, set := range []map[int]gpt.Entry{r.Slots, after} {
		for i := range set {
			if !seen[i] {
				seen[i] = true
				idx = append(idx, i)
			}
		}
	}
	sort.Ints(idx)
	ss := r.Table.SectorSize
	ls := []line{{"Slots (partition number = slot in the table; sector, size)", kHead},
		{fmt.Sprintf("  %3s  %-34s %-34s", "#", "NOW", "AFTER THE FIX"), kDim}}
	for _, i := range idx {
		now, okN := r.Slots[i]
		aft, okA := after[i]
		mark, k := " ", kPlain
		if okN != okA || (okN && now != aft) {
			mark, k = "*", kWarn
		}
		ls = append(ls, line{fmt.Sprintf("%s %3d  %-34s %-34s", mark, i, cell(now, okN, ss), cell(aft, okA, ss)), k})
	}
	if len(idx) == 0 {
		ls = append(ls, line{"  (no partitions)", kDim})
	}
	if m.w < 76 {
		ls = append(ls, line{"  (the screen is narrow: the AFTER column may be cut)", kDim})
	}
	return ls
}

func cell(e gpt.Entry, ok bool, ss int) string {
	if !ok {
		return "(empty)"
	}
	name := gpt.TypeName(e.Type)
	if len(name) > 14 {
		name = name[:13] + "~"
	}
	return fmt.Sprintf("%-14s %10d %9s", name, e.First, gpt.HumanBytes(int64(e.Sectors())*int64(ss)))
}

// confirmFix asks for the device name before writing.
type confirmFix struct {
	r   DiskReport
	in  textinput.Model
	msg string
}

func newConfirmFix(m *Model, r DiskReport) *confirmFix {
	in := newInput(m, "(type the device name)")
	return &confirmFix{r: r, in: in}
}

func (c *confirmFix) title() string { return "fix " + c.r.Disk.Path }
func (c *confirmFix) keys() string  { return "type the device name, Enter  Esc back (nothing written)" }

func (c *confirmFix) update(m *Model, msg tea.Msg) tea.Cmd {
	if k, ok := msg.(tea.KeyMsg); ok && k.String() == "enter" {
		typed := strings.TrimSpace(c.in.Value())
		if typed != c.r.Disk.Path {
			m.flash = fmt.Sprintf("You typed %q, not %s: nothing written.", typed, c.r.Disk.Path)
			c.in.SetValue("")
			return nil
		}
		r := c.r
		plan := r.Plan.String()
		m.pop()
		return m.startTask("fixing "+r.Disk.Path, func(t *taskCtx) (string, kind, error) {
			res, err := m.b.Fix(r.Disk, plan)
			if err != nil {
				s := ""
				if res != nil && res.Where != "" {
					s = "Undo file: " + res.Where + "\n"
				}
				return s, kBad, err
			}
			s := fmt.Sprintf("%s: written and verified (backup copy first, then the primary).\n\nNow: %s\n\n"+
				"Undo file: %s\nTo put back what was there before: gptfix -undo FILE -yes %s",
				r.Disk.Path, res.After.Verdict, res.Where, r.Disk.Path)
			return s, kindOf(res.After.Health), nil
		})
	}
	var cmd tea.Cmd
	c.in, cmd = c.in.Update(msg)
	return cmd
}

func (c *confirmFix) body(m *Model) ([]line, int) {
	var ls []line
	ls = append(ls, m.wrap("This writes the partition table of "+c.r.Disk.Describe()+":", 0, kWarn)...)
	for _, l := range strings.Split(strings.TrimRight(c.r.Plan.String(), "\n"), "\n") {
		ls = append(ls, m.wrap(l, 2, kPlain)...)
	}
	ls = append(ls, line{"", kPlain})
	ls = append(ls, m.wrap("An undo file is saved first. To go ahead, type the device name ("+c.r.Disk.Path+") and press Enter:", 0, kPlain)...)
	ls = append(ls, line{c.in.View(), kPlain})
	return ls, len(ls) - 1
}
