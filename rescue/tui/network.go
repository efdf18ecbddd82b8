package tui

import (
	"fmt"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
)

// network configures one NIC: choose it, then DHCP or a static address.
type network struct {
	step int // 0 NIC, 1 mode, 2 static form
	nics list
	mode list
	form form
}

func newNetwork(m *Model) *network {
	n := &network{}
	n.form.fields = []field{
		{label: "Address/prefix", in: newInput(m, "(e.g. 10.0.0.5/24)")},
		{label: "Gateway (optional)", in: newInput(m, "(e.g. 10.0.0.1)")},
		{label: "DNS server (optional)", in: newInput(m, "(e.g. 10.0.0.2)")},
	}
	n.form.fields[1].in.Blur()
	n.form.fields[2].in.Blur()
	return n
}

func (n *network) title() string { return "network" }
func (n *network) keys() string {
	if n.step == 2 {
		return "Up/Down/Tab next field  Enter apply  Esc back"
	}
	return "Up/Down move  Enter choose  Esc back"
}

func (n *network) esc(m *Model) tea.Cmd {
	if n.step == 0 {
		m.pop()
	} else {
		n.step--
	}
	return nil
}

func (n *network) nicItems(m *Model) []item {
	var its []item
	if m.hw == nil {
		return nil
	}
	for i, c := range m.hw.NICs {
		key := ""
		if i < 9 {
			key = fmt.Sprint(i + 1)
		}
		state := "no address"
		if len(c.Addrs) > 0 {
			state = strings.Join(c.Addrs, " ")
		}
		its = append(its, item{key: key, label: fmt.Sprintf("%s %s %s: %s", c.Name, c.MAC, orDash(c.Driver), state),
			run: func(m *Model) tea.Cmd { n.step = 1; return nil }})
	}
	return its
}

func (n *network) modeItems() []item {
	return []item{
		{key: "d", label: "DHCP", run: func(m *Model) tea.Cmd { return n.apply(m, true) }},
		{key: "s", label: "Static address", run: func(m *Model) tea.Cmd { n.step = 2; return nil }},
	}
}

func (n *network) nic(m *Model) string { return m.hw.NICs[n.nics.cur].Name }

func (n *network) apply(m *Model, dhcp bool) tea.Cmd {
	nic := n.nic(m)
	addr, gw, dns := n.form.value(0), n.form.value(1), n.form.value(2)
	how := "DHCP"
	if !dhcp {
		how = addr
	}
	m.pop()
	return m.startTask("configuring "+nic+" ("+how+")", func(t *taskCtx) (string, kind, error) {
		res, err := NetworkUp(t.ctx, nic, dhcp, addr, gw, dns)
		if err != nil {
			return "", kBad, err
		}
		s := fmt.Sprintf("%s (%s): %s", res.Interface, res.MAC, res.Address)
		if res.Gateway != "" {
			s += ", gateway " + res.Gateway
		}
		if len(res.DNS) > 0 {
			s += ", DNS " + strings.Join(res.DNS, " ")
		}
		if res.Server != "" {
			s += ", from DHCP server " + res.Server
		}
		return s, kOK, nil
	})
}

func (n *network) update(m *Model, msg tea.Msg) tea.Cmd {
	switch n.step {
	case 0:
		return n.nics.handle(m, n.nicItems(m), msg)
	case 1:
		return n.mode.handle(m, n.modeItems(), msg)
	}
	enter, cmd := n.form.update(msg)
	if enter {
		if n.form.value(0) == "" {
			m.flash = "An address is needed, e.g. 10.0.0.5/24."
			return nil
		}
		return n.apply(m, false)
	}
	return cmd
}

func (n *network) body(m *Model) ([]line, int) {
	switch n.step {
	case 0:
		its := n.nicItems(m)
		if len(its) == 0 {
			return []line{{"No network interface found (is its driver loaded? see home: Controllers).", kWarn}}, -1
		}
		return n.nics.render(m, []line{{"Interface", kHead}}, its, 0)
	case 1:
		return n.mode.render(m, []line{{"How should " + n.nic(m) + " get its address?", kHead}}, n.modeItems(), 0)
	}
	return n.form.render(m, []line{{"Static address for " + n.nic(m), kHead}})
}
