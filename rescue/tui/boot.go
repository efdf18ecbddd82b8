package tui

import (
	"fmt"

	tea "github.com/charmbracelet/bubbletea"
)

// bootPick lists the ESXi disks to boot by kexec (u-root's esxiboot).
type bootPick struct {
	list
	refusal string
}

func newBoot(m *Model) *bootPick {
	b := &bootPick{}
	if err := m.b.kexecAllowed(); err != nil {
		b.refusal = err.Error()
	}
	return b
}

func (b *bootPick) title() string { return "boot ESXi" }
func (b *bootPick) keys() string  { return "Up/Down move  Enter boot  Esc back" }

func (b *bootPick) items(m *Model) []item {
	var its []item
	if m.hw == nil {
		return nil
	}
	for _, d := range m.hw.Disks {
		d := d
		if d.Match == nil {
			continue
		}
		its = append(its, item{key: fmt.Sprint(len(its) + 1), label: d.Disk.Describe(), sub: d.Verdict, kind: kindOf(d.Health), run: func(m *Model) tea.Cmd {
			if d.Boot != nil && !d.Boot.Bootable {
				m.flash = "ESXi's boot loader would not boot it: " + d.Boot.Verdict
				return nil
			}
			m.push(newYesNo("Boot ESXi from "+d.Disk.Path+" now (kexec, esxiboot --device "+d.Disk.Path+")? "+
				"This leaves the rescue system.", Result{Action: ActBoot, Disk: d.Disk.Path}))
			return nil
		}})
	}
	return its
}

func (b *bootPick) update(m *Model, msg tea.Msg) tea.Cmd {
	if b.refusal != "" {
		return nil
	}
	return b.handle(m, b.items(m), msg)
}

func (b *bootPick) body(m *Model) ([]line, int) {
	if b.refusal != "" {
		ls := []line{{"Booting ESXi from here is not possible:", kBad}}
		ls = append(ls, m.wrap(b.refusal, 2, kBad)...)
		return ls, -1
	}
	its := b.items(m)
	if len(its) == 0 {
		return []line{{"No disk holds an ESXi layout.", kWarn}}, -1
	}
	return b.render(m, []line{{"Disk to boot ESXi from", kHead}}, its, 0)
}
