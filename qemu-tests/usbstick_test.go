package qemutests

import (
	"os"
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
// the rescue stick stays byte-identical.
func TestUSBStickESXi(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	const ovmf = "/usr/share/ovmf/OVMF.fd"
	if _, err := os.Stat(ovmf); err != nil {
		t.Fatalf("%v: install the ovmf package (./build.sh deps)", err)
	}
	if _, err := os.Stat(a.USB); err != nil {
		t.Fatalf("%v: run ./build.sh first", err)
	}
	t.Parallel()
	dir := t.TempDir()
	stick := filepath.Join(dir, "rescue-usb.img")
	if err := CopySparse(a.USB, stick); err != nil {
		t.Fatal(err)
	}
	if err := setStickArgs(stick, append([]string{"panic=-1"}, handsOffFix...)); err != nil {
		t.Fatal(err)
	}
	stickDigest, err := FileDigest(stick)
	if err != nil {
		t.Fatal(err)
	}
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
	if after, err := FileDigest(stick); err != nil {
		t.Fatal(err)
	} else if after != stickDigest {
		t.Errorf("the rescue system wrote to its own USB stick")
	}
}
