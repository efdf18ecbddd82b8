// Package netup brings the rescue system's network up: it parses the
// kernel's ip= and BOOTIF= arguments, picks the interface (the PXE boot
// interface first), waits a bounded time for link, configures a static
// address or runs DHCP (insomniacslk/dhcp), and writes /etc/resolv.conf.
package netup

import (
	"fmt"
	"net"
	"strings"
)

// Mode says how an interface gets its address.
type Mode string

// The address modes of ip=.
const (
	ModeOff    Mode = "off"    // ip=off or ip=none: no network
	ModeDHCP   Mode = "dhcp"   // ip=dhcp (also on, any, bootp, both)
	ModeStatic Mode = "static" // ip=<client>:...:off
)

// IPConfig is a parsed ip= kernel argument.
type IPConfig struct {
	Mode     Mode
	Client   net.IP     // static address (ModeStatic)
	Server   net.IP     // boot server, informational
	Gateway  net.IP     // default route, may be nil
	Netmask  net.IPMask // static netmask, required with ModeStatic
	Hostname string
	Device   string // interface name; "" = pick one (BOOTIF first)
	DNS      []net.IP
}

// ParseIP parses the kernel's ip= argument (Documentation/admin-guide/nfs/nfsroot.rst):
//
//	ip=dhcp | on | any | bootp | both | off | none
//	ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>:<ntp0-ip>
//
// In the long form an autoconf of dhcp/on/any/bootp/both asks for DHCP on
// the given device; off/none (or empty) with a client address is static.
// rarp is not supported.
func ParseIP(s string) (*IPConfig, error) {
	switch strings.ToLower(s) {
	case "dhcp", "on", "any", "bootp", "both":
		return &IPConfig{Mode: ModeDHCP}, nil
	case "off", "none":
		return &IPConfig{Mode: ModeOff}, nil
	case "":
		return nil, fmt.Errorf("ip=: empty value (want dhcp, off or <client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>)")
	}
	if !strings.Contains(s, ":") {
		return nil, fmt.Errorf("ip=%s: unknown mode (want dhcp, off or the colon-separated static form)", s)
	}
	f := strings.Split(s, ":")
	if len(f) > 10 {
		return nil, fmt.Errorf("ip=%s: %d fields, the kernel form has at most 10", s, len(f))
	}
	for len(f) < 10 {
		f = append(f, "")
	}
	c := &IPConfig{Hostname: f[4], Device: f[5]}
	ipField := func(name, v string) (net.IP, error) {
		if v == "" {
			return nil, nil
		}
		ip := net.ParseIP(v).To4()
		if ip == nil {
			return nil, fmt.Errorf("ip=%s: %s %q is not an IPv4 address", s, name, v)
		}
		return ip, nil
	}
	var err error
	if c.Client, err = ipField("client address", f[0]); err != nil {
		return nil, err
	}
	if c.Server, err = ipField("server address", f[1]); err != nil {
		return nil, err
	}
	if c.Gateway, err = ipField("gateway", f[2]); err != nil {
		return nil, err
	}
	if f[3] != "" {
		m, err := ipField("netmask", f[3])
		if err != nil {
			return nil, err
		}
		mask := net.IPMask(m)
		if ones, bits := mask.Size(); ones == 0 && bits == 0 {
			return nil, fmt.Errorf("ip=%s: netmask %q is not contiguous", s, f[3])
		}
		c.Netmask = mask
	}
	for i, v := range f[7:9] {
		ip, err := ipField(fmt.Sprintf("dns%d", i), v)
		if err != nil {
			return nil, err
		}
		if ip != nil {
			c.DNS = append(c.DNS, ip)
		}
	}
	if _, err := ipField("ntp0", f[9]); err != nil {
		return nil, err
	}
	if c.Device != "" && strings.ContainsAny(c.Device, "/ ") {
		return nil, fmt.Errorf("ip=%s: bad device name %q", s, c.Device)
	}
	switch strings.ToLower(f[6]) {
	case "dhcp", "on", "any", "bootp", "both":
		c.Mode = ModeDHCP
	case "off", "none", "":
		if c.Client == nil {
			if f[6] == "" {
				// ip=::::::: with nothing set: the kernel treats an empty
				// autoconf without address as "any".
				c.Mode = ModeDHCP
				break
			}
			return nil, fmt.Errorf("ip=%s: autoconf %q needs a client address", s, f[6])
		}
		if c.Netmask == nil {
			return nil, fmt.Errorf("ip=%s: static address %s needs a netmask (4th field, e.g. 255.255.255.0)", s, c.Client)
		}
		c.Mode = ModeStatic
		if c.Gateway != nil && !(&net.IPNet{IP: c.Client.Mask(c.Netmask), Mask: c.Netmask}).Contains(c.Gateway) {
			return nil, fmt.Errorf("ip=%s: gateway %s is outside %s/%s", s, c.Gateway, c.Client, net.IP(c.Netmask))
		}
	case "rarp":
		return nil, fmt.Errorf("ip=%s: autoconf rarp is not supported (use dhcp or a static address)", s)
	default:
		return nil, fmt.Errorf("ip=%s: unknown autoconf %q (want off, none, dhcp, on, any, bootp, both)", s, f[6])
	}
	return c, nil
}

// ParseBOOTIF parses PXELINUX/iPXE's BOOTIF=01-aa-bb-cc-dd-ee-ff: the ARP
// hardware type (01 = Ethernet) followed by the MAC address of the
// interface the machine booted from.
func ParseBOOTIF(s string) (net.HardwareAddr, error) {
	parts := strings.Split(s, "-")
	if len(parts) < 2 {
		return nil, fmt.Errorf("BOOTIF=%s: want <hwtype>-<mac>, e.g. 01-52-54-00-12-34-56", s)
	}
	if parts[0] != "01" {
		return nil, fmt.Errorf("BOOTIF=%s: hardware type %q is not Ethernet (01)", s, parts[0])
	}
	mac, err := net.ParseMAC(strings.Join(parts[1:], ":"))
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("BOOTIF=%s: %q is not a 6-byte MAC address", s, strings.Join(parts[1:], "-"))
	}
	return mac, nil
}
