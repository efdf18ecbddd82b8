package usbimg

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: install the APT_PACKAGES of build.sh", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// build makes a small image with a few files and fake GRUB boot code.
func build(t *testing.T, dir string, bios bool) (string, map[string][]byte, Options) {
	t.Helper()
	files := map[string][]byte{
		"/EFI/BOOT/BOOTX64.EFI": bytes.Repeat([]byte("MZ-efi-"), 40000),
		"/boot/grub/grub.cfg":   []byte("set rescue_args=\"rescue.action=shell\"\n"),
		"/rescue/vmlinuz":       bytes.Repeat([]byte{0xAB, 0xCD, 0x01}, 700000),
		"/README.txt":           []byte("hello\n"),
	}
	opt := Options{Size: 40 << 20, Label: "RESCUE"}
	for dst, body := range files {
		src := filepath.Join(dir, strings.ReplaceAll(dst[1:], "/", "_"))
		if err := os.WriteFile(src, body, 0o644); err != nil {
			t.Fatal(err)
		}
		opt.Files = append(opt.Files, File{Dst: dst, Src: src})
	}
	if bios {
		opt.GrubBootImg = bytes.Repeat([]byte{0xEB}, sector)
		opt.GrubCoreImg = bytes.Repeat([]byte{0xC0}, 3*sector+100)
	}
	img := filepath.Join(dir, "usb.img")
	if err := Build(img, opt); err != nil {
		t.Fatal(err)
	}
	return img, files, opt
}

func TestBuildVerifiedByOtherTools(t *testing.T) {
	need(t, "sgdisk", "sfdisk", "fsck.fat", "fatlabel", "mtype")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	dir := t.TempDir()
	img, files, _ := build(t, dir, true)

	if out := run(t, "sgdisk", "-v", img); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	sf := run(t, "sfdisk", "--dump", img)
	for _, want := range []string{
		"label: gpt",
		"start=        4096", "type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
		"start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649",
	} {
		if !strings.Contains(sf, want) {
			t.Errorf("sfdisk --dump lacks %q:\n%s", want, sf)
		}
	}

	// The ESP alone, checked by fsck.fat (exit status 0: no errors).
	esp := filepath.Join(dir, "esp.img")
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(esp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(in, espStart*sector, 1<<62)); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if o := run(t, "fsck.fat", "-n", esp); strings.Contains(o, "Fixing") || strings.Contains(o, "uninitialized") {
		t.Errorf("fsck.fat -n complains:\n%s", o)
	}
	if o := run(t, "fatlabel", esp); strings.TrimSpace(o) != "RESCUE" {
		t.Errorf("fatlabel = %q, want RESCUE", o)
	}
	if o := run(t, "mdir", "-i", esp, "::/"); !strings.Contains(o, "Volume Serial Number is") || strings.Contains(o, "0000-0000") {
		t.Errorf("volume serial number missing or zero:\n%s", o)
	}
	if o := run(t, "fsck.fat", "-n", "-v", esp); !strings.Contains(o, "4096 hidden sectors") {
		t.Errorf("FAT hidden sectors should be the partition start (4096):\n%s", o)
	}
	for dst, body := range files {
		got := run(t, "mtype", "-i", fmt.Sprintf("%s@@%d", img, espStart*sector), "::"+dst)
		if got != string(body) {
			t.Errorf("%s on the stick: %d bytes differ from the %d put there", dst, len(got), len(body))
		}
	}

	// GRUB BIOS boot code: MBR code patched, partition table kept, core.img block list.
	head := make([]byte, (biosBootStart+1)*sector)
	if _, err := in.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(head[grubKernelSector:]); got != biosBootStart {
		t.Errorf("boot.img kernel sector = %d, want %d", got, biosBootStart)
	}
	if head[grubDriveCheck] != 0x90 || head[grubDriveCheck+1] != 0x90 || head[0] != 0xEB {
		t.Errorf("boot.img code not installed: % x", head[:8])
	}
	if head[0x1be+4] != 0xEE || head[510] != 0x55 || head[511] != 0xAA {
		t.Errorf("protective MBR entry lost: type %#x, signature % x", head[0x1be+4], head[510:512])
	}
	bl := head[biosBootStart*sector+grubBlocklist:]
	if s, n, seg := binary.LittleEndian.Uint64(bl), binary.LittleEndian.Uint16(bl[8:]), binary.LittleEndian.Uint16(bl[10:]); s != biosBootStart+1 || n != 3 || seg != grubCoreSegment {
		t.Errorf("core.img block list = start %d len %d segment %#x, want %d 3 %#x", s, n, seg, biosBootStart+1, grubCoreSegment)
	}
}

func TestBuildReproducible(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	a, _, _ := build(t, t.TempDir(), false)
	b, _, _ := build(t, t.TempDir(), false)
	ab, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ab, bb) {
		t.Error("two builds from the same inputs differ")
	}
}

func TestBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(30 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, tc := range []struct {
		name string
		opt  Options
		want string
	}{
		{"label", Options{Size: 64 << 20, Label: "MUCH-TOO-LONG"}, "label"},
		{"too small", Options{Size: 40 << 20, Label: "RESCUE", Files: []File{{"/big", src}}}, "too small"},
		{"missing file", Options{Size: 64 << 20, Label: "RESCUE", Files: []File{{"/x", filepath.Join(dir, "nope")}}}, "no such file"},
		{"core too big", Options{Size: 64 << 20, Label: "RESCUE", GrubBootImg: make([]byte, 512), GrubCoreImg: make([]byte, 2<<20)}, "core.img"},
		{"boot.img size", Options{Size: 64 << 20, Label: "RESCUE", GrubBootImg: make([]byte, 440), GrubCoreImg: make([]byte, 512)}, "boot.img"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Build(filepath.Join(dir, tc.name+".img"), tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build error = %v, want one about %q", err, tc.want)
			}
		})
	}
}
