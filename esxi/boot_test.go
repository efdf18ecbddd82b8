package esxi

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/esxi/stubkernel"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestBankBootsInQEMU takes b.b00 and its modules out of a created image's
// boot bank with mtools, reads the bank UUID from the partition's magic
// sector, and boots them with QEMU's multiboot loader the way ESXi's loader
// would (bootUUID= appended to kernelopt). The stub must name that bank and
// power the VM off.
func TestBankBootsInQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("qemu-system-x86_64 missing in CI (Debian package qemu-system-x86 is in APT_PACKAGES)")
		}
		t.Skip("SKIPPING THE QEMU BOOT OF b.b00: qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
	}
	mcopy := needTool(t, "mcopy", "mtools")
	for _, opt := range []CreateOptions{
		{Version: "5.0", Size: 8 << 30, Seed: 61},
		{Version: "7.0", Size: 8 << 30, SectorSize: 4096, Seed: 62},
	} {
		t.Run(fmt.Sprintf("%s-%d", opt.Version, opt.SectorSize), func(t *testing.T) {
			img := createImage(t, opt)
			parts, _ := Layout(opt.Version, opt.Size, max(opt.SectorSize, 512))
			ss := int64(max(opt.SectorSize, 512))
			for _, p := range parts {
				if p.Role != RoleBootBank && p.Role != RoleAltBank {
					continue
				}
				start := int64(p.First) * 512
				f, _ := os.Open(img)
				magic := make([]byte, 32)
				f.ReadAt(magic, start+ss)
				f.Close()
				if string(magic[:16]) != BankMagic {
					t.Fatalf("bank %d: no magic", p.Slot)
				}
				uuid := hex.EncodeToString(magic[16:])
				dir := t.TempDir()
				spec := fmt.Sprintf("%s@@%d", img, start)
				var mods []string
				for _, name := range append([]string{"b.b00"}, BankModules...) {
					gpttest.Run(t, mcopy, "-n", "-i", spec, "::"+name, filepath.Join(dir, name))
					if name != "b.b00" {
						mods = append(mods, filepath.Join(dir, name))
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, qemu, "-m", "128", "-kernel", filepath.Join(dir, "b.b00"),
					"-append", "no-auto-partition bootUUID="+uuid, "-initrd", strings.Join(mods, ","),
					"-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none").Output()
				if ctx.Err() != nil {
					t.Fatalf("bank %d: QEMU did not power off within 90 s: %q", p.Slot, out)
				}
				if err != nil {
					t.Fatalf("bank %d: QEMU: %v %q", p.Slot, err, out)
				}
				want := fmt.Sprintf("%s%s modules=%d", stubkernel.Marker, opt.BankUUID(p.Slot), len(BankModules))
				if !strings.Contains(string(out), want) {
					t.Errorf("bank %d: serial %q lacks %q", p.Slot, out, want)
				}
			}
		})
	}
}
