package system

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/rescue/inventory"
)

// TestBanner: the banner names -yes (not the old -w) and the exact
// commands for each disk found.
func TestBanner(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.img")
	if err := esxi.Create(orig, esxi.CreateOptions{Version: "6.0", Size: 20 << 30, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.img")
	if err := esxi.Damage(bad, "windows", esxi.DamageOptions{Source: orig}); err != nil {
		t.Fatal(err)
	}
	blank := filepath.Join(dir, "blank.img")
	os.WriteFile(blank, nil, 0o644)
	os.Truncate(blank, 1<<30)
	var disks []inventory.Disk
	for _, p := range []string{bad, blank, orig} {
		st, _ := os.Stat(p)
		disks = append(disks, inventory.Disk{Path: p, Size: st.Size(), SectorSize: 512})
	}
	var b bytes.Buffer
	Banner(&b, disks, nil)
	out := b.String()
	for _, want := range []string{
		"gptfix -esxi " + bad + " ", "gptfix -esxi -yes " + bad + " ", "esxiboot --device " + bad,
		"esximg inspect " + orig, "imgcopy -sha256 HEX http://SERVER/esxi.img.zst " + blank,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"unless -w", "gptfix -esxi -yes " + orig} {
		if strings.Contains(out, bad) {
			t.Errorf("banner has %q:\n%s", bad, out)
		}
	}
	if b, err := os.ReadFile("../../initramfs/files/etc/rescue-banner"); err != nil || strings.Contains(string(b), "-w)") || !strings.Contains(string(b), "-yes") {
		t.Errorf("initramfs/files/etc/rescue-banner: %v\n%s", err, b)
	}
}
