package tui

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNetworkUpRefusesBadInput: a static address is checked (by netup's
// own ip= parser) before any interface is touched.
func TestNetworkUpRefusesBadInput(t *testing.T) {
	for _, tc := range []struct{ addr, gw, dns, want string }{
		{"10.0.0.5", "", "", "want ADDRESS/PREFIX"},
		{"nonsense/24", "", "", "want ADDRESS/PREFIX"},
		{"10.0.0.5/24", "not-an-ip", "", "not-an-ip"},
		{"10.0.0.5/24", "10.0.0.1", "x.y", "x.y"},
	} {
		_, err := NetworkUp(context.Background(), "nosuchnic0", false, tc.addr, tc.gw, tc.dns)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NetworkUp(%q, %q, %q) = %v, want an error with %q", tc.addr, tc.gw, tc.dns, err, tc.want)
		}
	}
}

// TestModeFor: dumb terminals get the plain menu, VT100s no colour.
func TestModeFor(t *testing.T) {
	for _, tc := range []struct {
		term           string
		noColor        bool
		plain, colored bool
	}{
		{"dumb", false, true, false}, {"linux", false, false, true}, {"linux", true, false, false},
		{"vt100", false, false, false}, {"vt220", false, false, false}, {"xterm-256color", false, false, true}, {"", false, false, true},
	} {
		p, c := ModeFor(tc.term, tc.noColor)
		if p != tc.plain || c != tc.colored {
			t.Errorf("ModeFor(%q, %v) = %v, %v; want %v, %v", tc.term, tc.noColor, p, c, tc.plain, tc.colored)
		}
	}
}

// TestQuietConsole lowers the console log level and restores the old
// four values.
func TestQuietConsole(t *testing.T) {
	f := filepath.Join(t.TempDir(), "printk")
	os.WriteFile(f, []byte("7\t4\t1\t7\n"), 0o644)
	restore, err := QuietConsole(f)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(f); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("while quiet: %q", b)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(f); string(b) != "7 4 1 7\n" {
		t.Errorf("restored: %q", b)
	}
	if _, err := QuietConsole(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("no error for a missing printk file")
	}
}
