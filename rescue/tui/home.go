package tui

import (
	"fmt"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
)

// home is the first screen: the hardware report and the actions.
type home struct{ list }

func (h *home) title() string { return "home" }
func (h *home) keys() string {
	return "Up/Down move  Enter choose  letters/numbers choose directly  PgUp/PgDn scroll"
}

func kindOf(hl Health) kind {
	return [...]kind{kOK, kInfo, kWarn, kBad}[hl]
}

func (h *home) items(m *Model) (disks, actions []item) {
	if m.hw != nil {
		for i, d := range m.hw.Disks {
			i := i
			key := ""
			if i < 9 {
				key = fmt.Sprint(i + 1)
			}
			disks = append(disks, item{key: key, label: d.Disk.Describe(), sub: d.Verdict, kind: kindOf(d.Health),
				run: func(m *Model) tea.Cmd { m.push(&diskScreen{i: i}); return nil }})
		}
	}
	actions = []item{
		{key: "r", label: "Restore an image onto a disk", run: func(m *Model) tea.Cmd { m.push(newRestore(m)); return nil }},
		{key: "u", label: "Back up a disk to an image file", run: func(m *Model) tea.Cmd { m.push(newBackup(m)); return nil }},
		{key: "n", label: "Network: DHCP or a static address", run: func(m *Model) tea.Cmd { m.push(newNetwork(m)); return nil }},
		{key: "e", label: "Boot ESXi from a disk (kexec)", run: func(m *Model) tea.Cmd { m.push(newBoot(m)); return nil }},
		{key: "s", label: "Shell (prints the commands for these disks)", run: func(m *Model) tea.Cmd { return m.quit(Result{Action: ActShell}) }},
		{key: "b", label: "Reboot", run: func(m *Model) tea.Cmd {
			m.push(newYesNo("Reboot now? The disks are synced first.", Result{Action: ActReboot}))
			return nil
		}},
		{key: "p", label: "Power off", run: func(m *Model) tea.Cmd {
			m.push(newYesNo("Power off now? The disks are synced first.", Result{Action: ActPowerOff}))
			return nil
		}},
		{key: "g", label: "Look at the disks again (rescan)", run: func(m *Model) tea.Cmd { m.flash = "scanning..."; return m.scan() }},
	}
	return disks, actions
}

func (h *home) update(m *Model, msg tea.Msg) tea.Cmd {
	d, a := h.items(m)
	return h.handle(m, append(d, a...), msg)
}

func (h *home) body(m *Model) ([]line, int) {
	disks, actions := h.items(m)
	h.cur = max(0, min(h.cur, len(disks)+len(actions)-1))
	var lines []line
	switch {
	case m.hw == nil && m.scanErr == "":
		lines = append(lines, line{"Examining the disks...", kDim})
	case m.scanErr != "":
		lines = append(lines, m.wrap("Listing the disks failed: "+m.scanErr, 0, kBad)...)
	case len(disks) == 0:
		lines = append(lines, line{"Disks: none found (is the storage driver loaded? see Controllers below, or dmesg)", kWarn})
	default:
		lines = append(lines, line{"Disks (Enter: slot table, boot banks, plan, Fix)", kHead})
	}
	lines, f1 := h.render(m, lines, disks, 0)
	if m.hw != nil {
		lines = append(lines, line{"Network", kHead})
		switch {
		case len(m.b.Files) > 0:
			lines = append(lines, line{"  (image files as disks: the network is not looked at)", kDim})
		case len(m.hw.NICs) == 0:
			lines = append(lines, line{"  no network interface found (driver missing?)", kWarn})
		}
		for _, n := range m.hw.NICs {
			state := "no address"
			if len(n.Addrs) > 0 {
				state = strings.Join(n.Addrs, " ")
			}
			carrier := "no cable/link"
			if n.Carrier {
				carrier = "link up"
			}
			lines = append(lines, line{fmt.Sprintf("  %s %s %s, %s: %s", n.Name, n.MAC, orDash(n.Driver), carrier, state), kPlain})
		}
		if m.hw.Drivers != "" {
			lines = append(lines, m.wrap("Drivers: "+m.hw.Drivers, 0, kDim)...)
		}
		if len(m.hw.Controllers) > 0 {
			lines = append(lines, line{"Controllers (driver, or what is missing)", kHead})
			for _, c := range m.hw.Controllers {
				k := kPlain
				if c.Missing {
					k = kWarn
				}
				lines = append(lines, m.wrap(c.Text, 2, k)...)
			}
		}
	}
	lines = append(lines, line{"Actions", kHead})
	lines, f2 := h.render(m, lines, actions, len(disks))
	return lines, max(f1, f2)
}

func orDash(s string) string {
	if s == "" {
		return "(no driver)"
	}
	return s
}

// yesNo asks before an action that ends the rescue session.
type yesNo struct {
	question string
	then     Result
}

func newYesNo(q string, then Result) *yesNo { return &yesNo{q, then} }

func (y *yesNo) title() string { return "confirm" }
func (y *yesNo) keys() string  { return "y yes  n/Esc no" }
func (y *yesNo) update(m *Model, msg tea.Msg) tea.Cmd {
	if k, ok := msg.(tea.KeyMsg); ok {
		switch k.String() {
		case "y", "Y":
			return m.quit(y.then)
		case "n", "N", "esc":
			m.pop()
		}
	}
	return nil
}
func (y *yesNo) body(m *Model) ([]line, int) {
	return append(m.wrap(y.question, 0, kWarn), line{"", kPlain}, line{"Press y to go ahead, n to go back.", kPlain}), -1
}
