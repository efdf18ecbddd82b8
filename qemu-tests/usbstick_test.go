package qemutests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUSBStickESXi: ESXi 6.7 installed on a USB stick (the USB-install
// layout: entries 1,5,6,7,8,9, no scratch, no datastore), raw-copied by
// "Windows" onto a bigger stick and compacted, plugged in beside the
// rescue stick (out/rescue-usb.img) on the same xHCI controller of a UEFI
// machine (OVMF) that boots the rescue stick. rescue.target=auto must
// pick the ESXi stick, never its own boot stick, and fix it slot-exact;
// the rescue stick keeps its table and files (the run adds /rescue-logs).
func TestUSBStickESXi(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()
	dir := t.TempDir()
	stick, ovmf := rescueStick(t, a, dir)
	if err := setStickArgs(stick, append([]string{"panic=-1"}, handsOffFix...)); err != nil {
		t.Fatal(err)
	}
	// The stick's own table area (MBR, GPT, GRUB's BIOS boot partition up
	// to the FAT partition at 2 MiB) and its files: the run may only add
	// its /rescue-logs directory (issue 14), never change anything else.
	headDigest := stickHead(t, stick)
	filesBefore := stickFiles(t, stick, "before")
	b, err := MakeBroken(tl, dir, BrokenOptions{Version: "6.7", Media: "usb", Size: "4G", DamageSize: "8G", Mode: "windows"})
	if err != nil {
		t.Fatal(err)
	}
	var slots []string
	for _, e := range b.OrigGPT.Primary.UsedEntries() {
		slots = append(slots, strconv.Itoa(e.Slot))
	}
	if got := strings.Join(slots, ","); got != "1,5,6,7,8,9" {
		t.Fatalf("esximg create -version 6.7 -media usb made entries %s, want the USB-install layout 1,5,6,7,8,9", got)
	}
	before := damagedDigests(t, b)
	r, _ := handsOff(t, VM{
		Name:    t.Name(),
		BIOS:    ovmf,
		Disks:   []Disk{{Path: stick, Bus: "usb"}, {Path: b.Damaged, Bus: "usb-data"}},
		Timeout: Scaled(200 * time.Second),
	}, nil)
	out := r.Output()
	if !strings.Contains(out, "the rescue stick") && !strings.Contains(out, "rescue medium") {
		t.Logf("note: the log does not say that the rescue stick was recognised:\n%s", grepLines(out, "disk: "))
	}
	checkFixed(t, b, before)
	if stickHead(t, stick) != headDigest {
		t.Errorf("the rescue system wrote to its own USB stick's partition table area")
	}
	filesAfter := stickFiles(t, stick, "after")
	if out, err := exec.Command("diff", "-r", "-x", "rescue-logs", filesBefore, filesAfter).CombinedOutput(); err != nil {
		t.Errorf("the rescue system changed files on its own USB stick:\n%s", out)
	}
}

// stickHead is the digest of the stick's first 2 MiB and last 33 sectors
// (its protective MBR, both GPT copies and the BIOS boot partition).
func stickHead(t *testing.T, stick string) string {
	t.Helper()
	f, err := os.Open(stick)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	head, err := DigestRange(f, 0, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := DigestRange(f, fi.Size()-33*512, 33*512)
	if err != nil {
		t.Fatal(err)
	}
	return head + tail
}

// rescueStick checks that OVMF and the built rescue stick are there and
// returns a sparse copy of the stick in dir for one VM, and the OVMF
// firmware to boot it with.
func rescueStick(t *testing.T, a *Artifacts, dir string) (stick, ovmf string) {
	t.Helper()
	ovmf = "/usr/share/ovmf/OVMF.fd"
	if _, err := os.Stat(ovmf); err != nil {
		t.Fatalf("%v: install the ovmf package (./build.sh deps)", err)
	}
	if _, err := os.Stat(a.USB); err != nil {
		t.Fatalf("%v: run ./build.sh first", err)
	}
	stick = filepath.Join(dir, "rescue-usb.img")
	if err := CopySparse(a.USB, stick); err != nil {
		t.Fatal(err)
	}
	return stick, ovmf
}
