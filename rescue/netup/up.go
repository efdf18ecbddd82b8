package netup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options bound the waits of Up.
type Options struct {
	BootIF      net.HardwareAddr // PXE boot interface (BOOTIF=), preferred
	LinkTimeout time.Duration    // wait for an interface and its carrier (0: 15 s)
	DHCPTimeout time.Duration    // wait for a lease per interface (0: 30 s)
	ResolvConf  string           // file to write (0: /etc/resolv.conf)
	Log         func(format string, args ...any)
}

// Result says how the network came up.
type Result struct {
	Interface string   `json:"interface"`
	MAC       string   `json:"mac"`
	Mode      Mode     `json:"mode"`
	Address   string   `json:"address"` // CIDR
	Gateway   string   `json:"gateway,omitempty"`
	DNS       []string `json:"dns,omitempty"`
	Server    string   `json:"dhcp_server,omitempty"`
	Seconds   float64  `json:"seconds"`
}

// Candidate is an interface Up may use.
type Candidate struct {
	Name    string
	MAC     net.HardwareAddr
	Carrier bool
}

// Choose orders the interfaces to try: the one named by ip=...:<device>
// only, else the BOOTIF interface only, else those with carrier first,
// each group by name. It fails with a clear message when the named or
// BOOTIF interface does not exist.
func Choose(cands []Candidate, device string, bootif net.HardwareAddr) ([]Candidate, error) {
	if device != "" {
		for _, c := range cands {
			if c.Name == device {
				return []Candidate{c}, nil
			}
		}
		return nil, fmt.Errorf("interface %s (from ip=) not found; interfaces: %s", device, names(cands))
	}
	if bootif != nil {
		for _, c := range cands {
			if bytes.Equal(c.MAC, bootif) {
				return []Candidate{c}, nil
			}
		}
		return nil, fmt.Errorf("no interface has the PXE boot MAC %s (BOOTIF=); interfaces: %s", bootif, names(cands))
	}
	if len(cands) == 0 {
		return nil, errors.New("no Ethernet interface found (is the NIC's driver in the initramfs?)")
	}
	var up, down []Candidate
	for _, c := range cands {
		if c.Carrier {
			up = append(up, c)
		} else {
			down = append(down, c)
		}
	}
	return append(up, down...), nil
}

func names(cands []Candidate) string {
	if len(cands) == 0 {
		return "none"
	}
	var s []string
	for _, c := range cands {
		s = append(s, fmt.Sprintf("%s (%s)", c.Name, c.MAC))
	}
	return strings.Join(s, ", ")
}

// ResolvConf renders /etc/resolv.conf.
func ResolvConf(dns []net.IP, search string) string {
	var b strings.Builder
	b.WriteString("# written by the rescue system\n")
	if search != "" {
		fmt.Fprintf(&b, "search %s\n", search)
	}
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.String()
}

// Up configures the network as cfg says: it brings up lo and the chosen
// interface, waits for carrier, then assigns the static address or runs
// DHCP (trying the next interface when one gets no lease), installs the
// default route and writes resolv.conf.
func Up(ctx context.Context, cfg *IPConfig, o Options) (*Result, error) {
	start := time.Now()
	if o.LinkTimeout == 0 {
		o.LinkTimeout = 15 * time.Second
	}
	if o.DHCPTimeout == 0 {
		o.DHCPTimeout = 30 * time.Second
	}
	if o.ResolvConf == "" {
		o.ResolvConf = "/etc/resolv.conf"
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	// Wait (bounded) for the wanted interface to exist: NIC drivers may
	// still be probing.
	var order []Candidate
	deadline := time.Now().Add(o.LinkTimeout)
	for {
		cands, err := ethernet()
		if err != nil {
			return nil, err
		}
		order, err = Choose(cands, cfg.Device, o.BootIF)
		if err == nil || time.Now().After(deadline) {
			if err != nil {
				return nil, fmt.Errorf("after %s: %w", o.LinkTimeout, err)
			}
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	// DHCP transaction IDs (and HTTPS) need the kernel's random number
	// generator; early in boot on a machine without RDRAND or a hardware
	// RNG it may not be seeded yet.
	if err := WaitRandom(ctx, o.DHCPTimeout, logf); err != nil {
		return nil, err
	}
	dhcpv4.RandomTimeout = o.DHCPTimeout
	var errs []error
	for _, c := range order {
		res, err := upOne(ctx, cfg, c, o, logf)
		if err == nil {
			res.Seconds = time.Since(start).Seconds()
			return res, nil
		}
		logf("network: %s: %v", c.Name, err)
		errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
		if cfg.Mode == ModeStatic {
			break
		}
	}
	return nil, fmt.Errorf("network not configured: %w", errors.Join(errs...))
}

func ethernet() ([]Candidate, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []Candidate
	for _, l := range links {
		a := l.Attrs()
		// Physical NICs are "device"; veth pairs (containers, tests)
		// behave like one. Bridges, bonds, VLANs, ifb, tun are left out.
		if (l.Type() != "device" && l.Type() != "veth") || a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
			continue
		}
		out = append(out, Candidate{Name: a.Name, MAC: a.HardwareAddr, Carrier: a.OperState == netlink.OperUp})
	}
	return out, nil
}

func upOne(ctx context.Context, cfg *IPConfig, c Candidate, o Options, logf func(string, ...any)) (*Result, error) {
	link, err := netlink.LinkByName(c.Name)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("setting the link up: %w", err)
	}
	// Carrier: bounded wait, then try anyway (some drivers report it late).
	deadline := time.Now().Add(o.LinkTimeout)
	for {
		l, err := netlink.LinkByName(c.Name)
		if err == nil && (l.Attrs().OperState == netlink.OperUp || l.Attrs().RawFlags&0x10000 != 0) { // IFF_LOWER_UP
			break
		}
		if time.Now().After(deadline) {
			logf("network: %s: no link after %s (cable? switch port?); trying anyway", c.Name, o.LinkTimeout)
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	res := &Result{Interface: c.Name, MAC: c.MAC.String(), Mode: cfg.Mode}
	var ip net.IP
	var mask net.IPMask
	var gw net.IP
	var dns []net.IP
	switch cfg.Mode {
	case ModeStatic:
		ip, mask, gw, dns = cfg.Client, cfg.Netmask, cfg.Gateway, cfg.DNS
	case ModeDHCP:
		logf("network: %s: asking for a DHCP lease (up to %s)", c.Name, o.DHCPTimeout)
		cl, err := nclient4.New(c.Name, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return nil, fmt.Errorf("DHCP client: %w", err)
		}
		defer cl.Close()
		dctx, cancel := context.WithTimeout(ctx, o.DHCPTimeout)
		defer cancel()
		mods := []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer, dhcpv4.OptionDomainName)}
		if cfg.Hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(cfg.Hostname)))
		}
		lease, err := cl.Request(dctx, mods...)
		if err != nil {
			return nil, fmt.Errorf("no DHCP lease within %s: %w", o.DHCPTimeout, err)
		}
		ack := lease.ACK
		ip, mask = ack.YourIPAddr, ack.SubnetMask()
		if mask == nil {
			mask = net.CIDRMask(24, 32)
		}
		if r := ack.Router(); len(r) > 0 {
			gw = r[0]
		}
		dns = ack.DNS()
		if len(cfg.DNS) > 0 {
			dns = cfg.DNS
		}
		res.Server = ack.ServerIdentifier().String()
	default:
		return nil, fmt.Errorf("ip mode %q", cfg.Mode)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: mask}, Broadcast: Broadcast(ip, mask)}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return nil, fmt.Errorf("assigning %s: %w", addr.IPNet, err)
	}
	res.Address = addr.IPNet.String()
	if gw != nil {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
		if err := netlink.RouteReplace(r); err != nil {
			return nil, fmt.Errorf("default route via %s: %w", gw, err)
		}
		res.Gateway = gw.String()
	}
	for _, d := range dns {
		res.DNS = append(res.DNS, d.String())
	}
	if len(dns) > 0 {
		if err := os.WriteFile(o.ResolvConf, []byte(ResolvConf(dns, "")), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", o.ResolvConf, err)
		}
	}
	return res, nil
}

// WaitRandom waits (bounded) until getrandom(2) answers without blocking,
// saying why when it has to wait.
func WaitRandom(ctx context.Context, timeout time.Duration, logf func(string, ...any)) error {
	b := make([]byte, 4)
	deadline := time.Now().Add(timeout)
	said := false
	for {
		_, err := unix.Getrandom(b, unix.GRND_NONBLOCK)
		if err == nil || !errors.Is(err, unix.EAGAIN) {
			return nil
		}
		if !said {
			logf("network: waiting for the kernel's random number generator (DHCP and HTTPS need it; a CPU with RDRAND, random.trust_cpu=on or a virtio-rng device avoid this wait)")
			said = true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the kernel's random number generator is still not seeded after %s (no RDRAND, no hardware RNG?)", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Broadcast is the IPv4 broadcast address of ip/mask (nil for IPv6). The
// kernel sets none unless asked, and broadcast rendezvous (udpcast's
// receivers find their sender that way) needs it.
func Broadcast(ip net.IP, mask net.IPMask) net.IP {
	v4 := ip.To4()
	if v4 == nil || len(mask) != net.IPv4len {
		return nil
	}
	b := make(net.IP, net.IPv4len)
	for i := range b {
		b[i] = v4[i] | ^mask[i]
	}
	return b
}
