package netup

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
)

// TestUpDHCP runs Up (ip=dhcp and the static form) against a real DHCP server across a veth pair between
// two network namespaces (ip netns), so the host's network is untouched.
// The server (insomniacslk's server4) and the client run as helper
// processes of this test binary inside the namespaces. Needs root and
// iproute2.
func TestUpDHCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ipCmd, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("iproute2 (ip) not installed")
	}
	id := fmt.Sprint(os.Getpid())
	srvNS, cliNS := "rsrv"+id, "rcli"+id
	ip := func(args ...string) error {
		out, err := exec.Command(ipCmd, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
		return nil
	}
	if err := ip("netns", "add", srvNS); err != nil {
		t.Skipf("cannot create network namespaces here: %v", err)
	}
	defer ip("netns", "del", srvNS)
	if err := ip("netns", "add", cliNS); err != nil {
		t.Fatal(err)
	}
	defer ip("netns", "del", cliNS)
	for _, args := range [][]string{
		{"link", "add", "v0", "netns", cliNS, "type", "veth", "peer", "name", "v1", "netns", srvNS},
		{"-n", srvNS, "addr", "add", "192.0.2.1/24", "dev", "v1"},
		{"-n", srvNS, "link", "set", "v1", "up"},
	} {
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	srv := exec.Command(ipCmd, "netns", "exec", srvNS, os.Args[0], "-test.run=^TestHelperDHCPServer$")
	srv.Env = append(os.Environ(), "RESCUE_NETUP_HELPER=server")
	srvOut := &strings.Builder{}
	srv.Stdout, srv.Stderr = srvOut, srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(300 * time.Millisecond)

	for _, tc := range []struct {
		ipArg, addr, server string
		dns                 string
	}{
		{ipArg: "dhcp", addr: "192.0.2.10/24", server: "192.0.2.1", dns: "192.0.2.53"},
		{ipArg: "192.0.2.20::192.0.2.1:255.255.255.0:esx:v0:off:192.0.2.54", addr: "192.0.2.20/24", dns: "192.0.2.54"},
	} {
		t.Run(tc.ipArg, func(t *testing.T) {
			resolv := filepath.Join(t.TempDir(), "resolv.conf")
			cli := exec.Command(ipCmd, "netns", "exec", cliNS, os.Args[0], "-test.run=^TestHelperDHCPClient$")
			cli.Env = append(os.Environ(), "RESCUE_NETUP_HELPER=client", "RESCUE_NETUP_RESOLV="+resolv, "RESCUE_NETUP_IP="+tc.ipArg)
			out, err := cli.CombinedOutput()
			if err != nil {
				t.Fatalf("client: %v\n%s\nserver:\n%s", err, out, srvOut)
			}
			var res Result
			line := ""
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "RESULT ") {
					line = strings.TrimPrefix(l, "RESULT ")
				}
			}
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				t.Fatalf("client output %q: %v", out, err)
			}
			if res.Interface != "v0" || res.Address != tc.addr || res.Gateway != "192.0.2.1" || res.Server != tc.server ||
				len(res.DNS) != 1 || res.DNS[0] != tc.dns {
				t.Errorf("Up = %+v", res)
			}
			if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "nameserver "+tc.dns+"\n") {
				t.Errorf("resolv.conf = %q", b)
			}
			// The address and default route really are on the interface
			// (iproute2's view).
			o, err := exec.Command(ipCmd, "-n", cliNS, "addr", "show", "dev", "v0").CombinedOutput()
			if err != nil || !strings.Contains(string(o), tc.addr) {
				t.Errorf("ip addr show: %s %v", o, err)
			}
			o, err = exec.Command(ipCmd, "-n", cliNS, "route", "show", "default").CombinedOutput()
			if err != nil || !strings.Contains(string(o), "via 192.0.2.1 dev v0") {
				t.Errorf("ip route show default: %s %v", o, err)
			}
			exec.Command(ipCmd, "-n", cliNS, "addr", "flush", "dev", "v0").Run()
		})
	}
}

func TestHelperDHCPServer(t *testing.T) {
	if os.Getenv("RESCUE_NETUP_HELPER") != "server" {
		t.Skip("helper process for TestUpDHCP")
	}
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		reply, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithYourIP(net.IPv4(192, 0, 2, 10)),
			dhcpv4.WithServerIP(net.IPv4(192, 0, 2, 1)),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithRouter(net.IPv4(192, 0, 2, 1)),
			dhcpv4.WithDNS(net.IPv4(192, 0, 2, 53)),
			dhcpv4.WithLeaseTime(3600),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(192, 0, 2, 1))))
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
	s, err := server4.NewServer("v1", &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(60 * time.Second); s.Close() }()
	s.Serve()
}

func TestHelperDHCPClient(t *testing.T) {
	if os.Getenv("RESCUE_NETUP_HELPER") != "client" {
		t.Skip("helper process for TestUpDHCP")
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	cfg, err := ParseIP(os.Getenv("RESCUE_NETUP_IP"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Up(context.Background(), cfg, Options{
		LinkTimeout: 5 * time.Second, DHCPTimeout: 20 * time.Second, ResolvConf: os.Getenv("RESCUE_NETUP_RESOLV"),
		Log: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
}
