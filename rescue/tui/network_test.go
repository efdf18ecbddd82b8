package tui

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/netnstest"
	"github.com/esxi-rescue/rescue/rescue/inventory"
)

// TestNetworkScreen drives the Network screen through its keys onto a
// veth NIC in a network namespace the test creates (netnstest.Pair), and
// checks with iproute2 (ip -j addr / ip -j route) what the kernel really
// has. The screen runs in a child process of this test binary started by
// `ip netns exec`: the screen configures the NIC from a goroutine of its
// own, and only a whole process in the namespace keeps every thread of it
// off the host's network. DHCP is served on the other end of the veth
// (netnstest.DHCPServer). Needs
// root; skipped without it unless CI is set.
func TestNetworkScreen(t *testing.T) {
	if os.Getenv(netChildEnv) != "" {
		networkChild(t)
		return
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but the test does not run as root: network namespaces need root")
		}
		t.Skip("network namespaces need root")
	}
	srv, cli := netnstest.Pair(t)
	prefix := strings.TrimSuffix(srv.Addr, ".1")
	netnstest.Run(t, "ip", "-n", cli.Name, "addr", "flush", "dev", cli.Dev)
	netnstest.DHCPServer(t, srv, prefix+".50")

	for _, tc := range []struct {
		name     string
		keys     []string
		want     []string
		addr, gw string // what ip must show afterwards; "" none
	}{
		{name: "a bad address is refused, nothing changes",
			keys: []string{"n", "1", "s", "type:" + prefix + ".300/24", "tab", "type:" + srv.Addr, "enter"},
			want: []string{"FAILED", `address "` + prefix + `.300/24": want ADDRESS/PREFIX, e.g. 10.0.0.5/24`}},
		{name: "no prefix is refused, nothing changes",
			keys: []string{"n", "1", "s", "type:" + prefix + ".2", "enter"},
			want: []string{"FAILED", "want ADDRESS/PREFIX"}},
		{name: "static address and gateway",
			keys: []string{"n", "1", "s", "type:" + prefix + ".2/24", "tab", "type:" + srv.Addr, "enter"},
			want: []string{"Done in", cli.Dev + " (", ": " + prefix + ".2/24, gateway " + srv.Addr},
			addr: prefix + ".2/24", gw: srv.Addr},
		{name: "DHCP",
			keys: []string{"n", "1", "d"},
			want: []string{"Done in", ": " + prefix + ".50/24, gateway " + srv.Addr + ", from DHCP server " + srv.Addr},
			addr: prefix + ".50/24", gw: srv.Addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netnstest.Run(t, "ip", "-n", cli.Name, "addr", "flush", "dev", cli.Dev)
			spec, _ := json.Marshal(netChild{NIC: cli.Dev, Keys: tc.keys, Want: tc.want})
			c := exec.Command("ip", "netns", "exec", cli.Name, os.Args[0], "-test.run=^TestNetworkScreen$", "-test.v")
			c.Env = append(os.Environ(), netChildEnv+"="+string(spec))
			out, err := c.CombinedOutput()
			if err != nil {
				t.Errorf("the screen in %s: %v\n%s", cli.Name, err, out)
			}
			addrs, gws := kernelNet(t, cli)
			if got := strings.Join(addrs, " "); got != tc.addr {
				t.Errorf("ip -j addr show dev %s: IPv4 %q, want %q", cli.Dev, got, tc.addr)
			}
			if got := strings.Join(gws, " "); got != tc.gw {
				t.Errorf("ip -j route show default: gateway %q, want %q", got, tc.gw)
			}
		})
	}
}

const netChildEnv = "RESCUE_TUI_NETWORK_CHILD"

// netChild is what the child process does: the keys, on a screen whose
// only NIC is NIC, and the text its page must show.
type netChild struct {
	NIC  string
	Keys []string
	Want []string
}

// networkChild runs inside the namespace: the real screen and Backend
// (one blank image file as its disk), the NIC the parent made.
func networkChild(t *testing.T) {
	var spec netChild
	if err := json.Unmarshal([]byte(os.Getenv(netChildEnv)), &spec); err != nil {
		t.Fatal(err)
	}
	ifi, err := net.InterfaceByName(spec.NIC)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Truncate(must(os.Create("blank.img")).Name(), 1<<20); err != nil {
		t.Fatal(err)
	}
	m := New(t.Context(), &Backend{Files: []string{"blank.img"}, KexecAllowed: func() error { return nil }}, "test", false)
	drive(m, m.Init())
	m.hw.NICs = []NICReport{{NIC: inventory.NIC{Name: spec.NIC, MAC: ifi.HardwareAddr.String(), Driver: "veth"}}}
	press(m, spec.Keys...)
	checkPage(t, m, spec.Want, nil)
	t.Logf("page:\n%s", pageText(m))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// kernelNet is the NIC's IPv4 addresses and the default routes' gateways
// in ns, as iproute2 reports them.
func kernelNet(t *testing.T, ns *netnstest.NS) (addrs, gws []string) {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns.Name, "-j", "addr", "show", "dev", ns.Dev).Output()
	if err != nil {
		t.Fatalf("ip -j addr show: %v", err)
	}
	var links []struct {
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("ip -j addr show: %v: %s", err, out)
	}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Family == "inet" {
				addrs = append(addrs, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
			}
		}
	}
	out, err = exec.Command("ip", "-n", ns.Name, "-j", "route", "show", "default").Output()
	if err != nil {
		t.Fatalf("ip -j route show default: %v", err)
	}
	var routes []struct {
		Gateway string `json:"gateway"`
		Dev     string `json:"dev"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		t.Fatalf("ip -j route: %v: %s", err, out)
	}
	for _, r := range routes {
		if r.Dev == ns.Dev {
			gws = append(gws, r.Gateway)
		}
	}
	return addrs, gws
}
