// Package netnstest builds private networks for tests: network
// namespaces the test creates and removes itself, joined by veth pairs, so
// that multicast and broadcast traffic never reaches the host's
// interfaces. It needs root and iproute2's ip.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
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
