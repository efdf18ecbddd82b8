package netup

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/netnstest"
	"github.com/vishvananda/netlink"
)

// TestUpDHCP runs Up (ip=dhcp and the static form) against a real DHCP
// server across a veth pair between two network namespaces
// (netnstest.Pair), so the host's network is untouched. The server
// (netnstest.DHCPServer) serves from the test's process, its socket made
// in its namespace; the client runs as a helper process of this test
// binary inside the other. Needs root and iproute2.
func TestUpDHCP(t *testing.T) {
	srv, cli := netnstest.Pair(t)
	prefix := strings.TrimSuffix(srv.Addr, ".1")
	netnstest.Run(t, "ip", "-n", cli.Name, "addr", "flush", "dev", cli.Dev)
	netnstest.DHCPServer(t, srv, prefix+".10", prefix+".53")

	for _, tc := range []struct {
		ipArg, addr, server string
		dns                 string
	}{
		{ipArg: "dhcp", addr: prefix + ".10/24", server: srv.Addr, dns: prefix + ".53"},
		{ipArg: prefix + ".20::" + srv.Addr + ":255.255.255.0:esx:" + cli.Dev + ":off:" + prefix + ".54", addr: prefix + ".20/24", dns: prefix + ".54"},
	} {
		t.Run(tc.ipArg, func(t *testing.T) {
			resolv := filepath.Join(t.TempDir(), "resolv.conf")
			c := exec.Command("ip", "netns", "exec", cli.Name, os.Args[0], "-test.run=^TestHelperDHCPClient$")
			c.Env = append(os.Environ(), "RESCUE_NETUP_HELPER=client", "RESCUE_NETUP_RESOLV="+resolv, "RESCUE_NETUP_IP="+tc.ipArg)
			out, err := c.CombinedOutput()
			if err != nil {
				t.Fatalf("client: %v\n%s", err, out)
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
			if res.Interface != cli.Dev || res.Address != tc.addr || res.Gateway != srv.Addr || res.Server != tc.server ||
				len(res.DNS) != 1 || res.DNS[0] != tc.dns {
				t.Errorf("Up = %+v", res)
			}
			if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "nameserver "+tc.dns+"\n") {
				t.Errorf("resolv.conf = %q", b)
			}
			// The address and default route really are on the interface
			// (iproute2's view).
			o, err := exec.Command("ip", "-n", cli.Name, "addr", "show", "dev", cli.Dev).CombinedOutput()
			if err != nil || !strings.Contains(string(o), tc.addr) {
				t.Errorf("ip addr show: %s %v", o, err)
			}
			o, err = exec.Command("ip", "-n", cli.Name, "route", "show", "default").CombinedOutput()
			if err != nil || !strings.Contains(string(o), "via "+srv.Addr+" dev "+cli.Dev) {
				t.Errorf("ip route show default: %s %v", o, err)
			}
			exec.Command("ip", "-n", cli.Name, "addr", "flush", "dev", cli.Dev).Run()
		})
	}
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
