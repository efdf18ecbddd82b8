package gpttest

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// AttachLoop attaches path to a free loop device with `losetup -f --show
// opts... path` (opts such as "-r", "-b", "4096", "-P") and detaches it
// when the test ends. When that is not possible here (not root, no loop
// devices in a container) it returns "" and why.
func AttachLoop(t testing.TB, path string, opts ...string) (dev, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return "", "loop devices need root"
	}
	args := append(append([]string{"-f", "--show"}, opts...), path)
	out, err := command("losetup", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Sprintf("no loop device available: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { command("losetup", "-d", dev).Run() })
	return dev, ""
}

// Loop is AttachLoop that skips the test when no loop device can be had.
func Loop(t testing.TB, path string, opts ...string) string {
	t.Helper()
	dev, why := AttachLoop(t, path, opts...)
	if dev == "" {
		t.Skip(why)
	}
	return dev
}
