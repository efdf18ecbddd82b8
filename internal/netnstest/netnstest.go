// Package netnstest builds private networks for tests: network
// namespaces the test creates and removes itself, joined by veth pairs, so
// that multicast and broadcast traffic never reaches the host's
// interfaces. It needs root and iproute2's ip.
package netnstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netns"
)

// NS is a network namespace with one interface on the private link.
type NS struct {
	Name, Dev, Addr string
}

// Command returns args prefixed so that they run inside the namespace.
func (n *NS) Command(args ...string) []string {
	return append([]string{"ip", "netns", "exec", n.Name}, args...)
}

var seq atomic.Int32

// Need skips the test when it cannot build namespaces (not root, no ip).
func Need(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip (iproute2)")
	}
}

// Run runs a command and fails the test with its output on error.
func Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Pair creates two namespaces joined by a veth pair, addresses
// 10.201.N.1/24 and 10.201.N.2/24 (with broadcast addresses: udpcast's
// rendezvous uses them), removed when the test ends.
func Pair(t testing.TB) (a, b *NS) {
	t.Helper()
	Need(t)
	n := int(seq.Add(1)) + os.Getpid()%200
	a = &NS{Name: fmt.Sprintf("t%d-%da", os.Getpid(), n), Dev: "veth0", Addr: fmt.Sprintf("10.201.%d.1", n%250)}
	b = &NS{Name: fmt.Sprintf("t%d-%db", os.Getpid(), n), Dev: "veth1", Addr: fmt.Sprintf("10.201.%d.2", n%250)}
	for _, ns := range []*NS{a, b} {
		Run(t, "ip", "netns", "add", ns.Name)
		name := ns.Name
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
				for _, pid := range strings.Fields(string(out)) {
					exec.Command("kill", "-9", pid).Run()
				}
			}
			exec.Command("ip", "netns", "del", name).Run()
		})
	}
	Run(t, "ip", "link", "add", a.Dev, "netns", a.Name, "type", "veth", "peer", "name", b.Dev, "netns", b.Name)
	for _, ns := range []*NS{a, b} {
		Run(t, "ip", "-n", ns.Name, "addr", "add", ns.Addr+"/24", "brd", "+", "dev", ns.Dev)
		Run(t, "ip", "-n", ns.Name, "link", "set", ns.Dev, "up")
		Run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	}
	return a, b
}

// DHCPServer serves offer to DHCP clients on srv's end of the link until
// the test ends: a /24 with router and server srv.Addr, a lease of an
// hour, and the DNS servers dns (none: the client, whose /etc may be the
// host's, writes no resolv.conf). Its socket (insomniacslk's server4) is
// made inside srv's namespace, on a locked thread that goes back to the
// test's namespace; it is bound when DHCPServer returns, so a request
// sent after that waits in it until served.
func DHCPServer(t testing.TB, srv *NS, offer string, dns ...string) {
	t.Helper()
	me := net.ParseIP(srv.Addr).To4()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithYourIP(net.ParseIP(offer).To4()),
		dhcpv4.WithServerIP(me),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithRouter(me),
		dhcpv4.WithLeaseTime(3600),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(me)),
	}
	if len(dns) > 0 {
		var ips []net.IP
		for _, d := range dns {
			ips = append(ips, net.ParseIP(d).To4())
		}
		mods = append(mods, dhcpv4.WithDNS(ips...))
	}
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		reply, err := dhcpv4.NewReplyFromRequest(m, mods...)
		if err != nil {
			return
		}
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			reply.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
		case dhcpv4.MessageTypeRequest:
			reply.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
		default:
			return
		}
		conn.WriteTo(reply.ToBytes(), peer)
	}
	type made struct {
		s   *server4.Server
		err error
	}
	ch := make(chan made)
	go func() {
		runtime.LockOSThread()
		// The thread stays locked (and is thrown away when this goroutine
		// ends) should going back fail.
		orig, err := netns.Get()
		if err != nil {
			ch <- made{nil, err}
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(srv.Name)
		if err != nil {
			ch <- made{nil, err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ch <- made{nil, err}
			return
		}
		s, err := server4.NewServer(srv.Dev, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- made{s, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("DHCP server in %s: %v", srv.Name, r.err)
	}
	go r.s.Serve()
	t.Cleanup(func() { r.s.Close() })
}
