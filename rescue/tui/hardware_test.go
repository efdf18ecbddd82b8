package tui

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestMissing: PCI storage and network controllers without a driver
// are reported; bound ones and other classes are not.
func TestMissing(t *testing.T) {
	root := t.TempDir()
	dev := func(addr, class, vendor, device string, bound bool) {
		d := filepath.Join(root, "sys/bus/pci/devices", addr)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "class"), []byte(class+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "vendor"), []byte(vendor+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "device"), []byte(device+"\n"), 0o644)
		if bound {
			os.Symlink("../../drivers/x", filepath.Join(d, "driver"))
			os.MkdirAll(filepath.Join(root, "sys/bus/pci/drivers/x"), 0o755)
		}
	}
	dev("0000:03:00.0", "0x010400", "0x1000", "0x005d", false) // RAID controller, no driver
	dev("0000:04:00.0", "0x020000", "0x8086", "0x10d3", true)  // NIC with its driver
	dev("0000:05:00.0", "0x020000", "0x14e4", "0x1657", false) // NIC, no driver
	dev("0000:00:02.0", "0x030000", "0x1234", "0x1111", false) // VGA: not our business
	got := Missing(root)
	want := []string{
		"network controller 0000:05:00.0 (vendor 0x14e4 device 0x1657): no driver loaded",
		"storage controller 0000:03:00.0 (vendor 0x1000 device 0x005d): no driver loaded",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Missing = %q, want %q", got, want)
	}
}

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
