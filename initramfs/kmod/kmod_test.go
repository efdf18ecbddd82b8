package kmod

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"kernel/drivers/block/virtio_blk.ko", "virtio_blk"},
		{"kernel/drivers/usb/host/xhci-pci.ko", "xhci_pci"},
		{"kernel/fs/nls/nls_iso8859-1.ko.xz", "nls_iso8859_1"},
		{"kernel/x/a-b.ko.zst", "a_b"},
		{"nls_iso8859-1", "nls_iso8859_1"},
		{"usb-storage", "usb_storage"},
	} {
		if got := Name(tc.in); got != tc.want {
			t.Errorf("Name(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A slice of a real Debian 6.1 modules.dep / softdep / builtin.
const (
	testDep = `kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/fs/nls/nls_iso8859-1.ko:
`
	testSoftdep = `# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crc32c
softdep virtio_blk pre: nonexistent_helper
`
	testBuiltin = `kernel/net/packet/af_packet.ko
kernel/crypto/crc32c_generic.ko
kernel/fs/fat/fat.ko
`
)

func testIndex(t *testing.T) *Index {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"modules.dep": testDep, "modules.softdep": testSoftdep, "modules.builtin": testBuiltin,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestResolve(t *testing.T) {
	idx := testIndex(t)
	// crc32c is a softdep of ext4 but the module is called crc32c_intel / crc32c_generic:
	// soft dependencies that do not exist are skipped, as modprobe does.
	for _, tc := range []struct {
		name         string
		in           []string
		want, wantBI []string
		err          string
	}{
		{name: "deps", in: []string{"virtio_blk"}, want: []string{"virtio", "virtio_blk", "virtio_ring"}},
		{name: "shared deps once", in: []string{"virtio_blk", "virtio-pci"},
			want: []string{"virtio", "virtio_blk", "virtio_pci", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring"}},
		{name: "dash name", in: []string{"nls_iso8859-1"}, want: []string{"nls_iso8859_1"}},
		{name: "builtin", in: []string{"af_packet", "ext4"}, want: []string{"crc16", "ext4", "jbd2", "mbcache"}, wantBI: []string{"af_packet"}},
		{name: "unknown", in: []string{"virtio_blk", "nosuch", "alsonot"}, err: "alsonot, nosuch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := idx.Resolve(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Resolve(%v) error = %v, want one naming %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sel.Modules, tc.want) {
				t.Errorf("modules = %v, want %v", sel.Modules, tc.want)
			}
			if !reflect.DeepEqual(sel.Builtin, tc.wantBI) {
				t.Errorf("builtin = %v, want %v", sel.Builtin, tc.wantBI)
			}
		})
	}
	if got := idx.Path["nls_iso8859_1"]; got != "kernel/fs/nls/nls_iso8859-1.ko" {
		t.Errorf("path of nls_iso8859_1 = %q", got)
	}
}

func TestParseDepErrors(t *testing.T) {
	idx := &Index{}
	if err := idx.ParseDep(strings.NewReader("kernel/a.ko kernel/b.ko\n")); err == nil {
		t.Error("ParseDep accepted a line without ':'")
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Error("Load accepted a directory without modules.dep")
	}
}

// TestModInfo builds an ELF object with a .modinfo section using binutils'
// objcopy (an independent tool) and reads it back.
func TestModInfo(t *testing.T) {
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Fatal("objcopy (binutils) is needed: install the APT_PACKAGES of build.sh")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "modinfo.bin")
	info := "license=GPL\x00firmware=tigon/tg3.bin\x00firmware=tigon/tg3_tso.bin\x00alias=pci:v000014E4d00001644sv*sd*bc*sc*i*\x00depends=\x00name=tg3\x00"
	if err := os.WriteFile(raw, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	ko := filepath.Join(dir, "tg3.ko")
	cmd := exec.Command(objcopy, "-I", "binary", "-O", "elf64-x86-64", "--rename-section", ".data=.modinfo", raw, ko)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	got, err := ModInfo(ko)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tigon/tg3.bin", "tigon/tg3_tso.bin"}; !reflect.DeepEqual(got["firmware"], want) {
		t.Errorf("firmware = %v, want %v", got["firmware"], want)
	}
	if got["name"][0] != "tg3" || got["license"][0] != "GPL" || len(got["depends"]) != 1 {
		t.Errorf("modinfo = %v", got)
	}
	if _, err := ModInfo(raw); err == nil {
		t.Error("ModInfo accepted a file that is not ELF")
	}
}
