// Package esxitest adapts the esxi package's layouts to internal/gpttest's
// independent fixture builders, for tests of the packages above both.
package esxitest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// Parts converts an ESXi layout to gpttest partitions with LBAs in
// sectorSize-byte sectors. withAttrs keeps the layout's attribute bits;
// without it every partition gets none (as a plain `sgdisk -n` makes).
func Parts(parts []esxi.Part, sectorSize int, withAttrs bool) []gpttest.Part {
	out := make([]gpttest.Part, 0, len(parts))
	for _, p := range parts {
		f, l := p.LBAs(sectorSize)
		gp := gpttest.Part{Slot: p.Slot, Type: p.Type, First: f, Last: l}
		if withAttrs {
			gp.Attrs = p.Attrs
		}
		out = append(out, gp)
	}
	return out
}

// Layout is esxi.Layout for a test: the ESXi layout of version v on a disk
// of size bytes with sectorSize-byte sectors; an error fails t.
func Layout(t testing.TB, v esxi.Version, size int64, sectorSize int) []esxi.Part {
	t.Helper()
	parts, err := esxi.Layout(v, size, sectorSize)
	if err != nil {
		t.Fatalf("ESXi %s layout for %d bytes: %v", v, size, err)
	}
	return parts
}

// MBRTableLBAs are the sectors that hold the MBR (msdos) table MBRDisk
// writes: sector 0 and the extended partition's EBRs.
var MBRTableLBAs = []int64{0, 8192, 8193, 520192, 1032192, 1257472, 1843199, 1843200}

// MBRDisk writes with sfdisk (an independent tool) the MBR (msdos) table
// of an ESXi host upgraded from ESX(i) 4.x onto the existing file path
// (8 GiB or more): 4 = 32-8191 type 4, extended 1 = 8192-1843199 holding
// the logical 5,6,7,8, scratch 2 and the VMFS datastore 3 (type 0xFB).
// Named lines give sfdisk that numbering.
func MBRDisk(t testing.TB, path string) {
	t.Helper()
	script := strings.ReplaceAll("label: dos\n"+
		"IMG4 : start=32, size=8160, type=4\n"+
		"IMG1 : start=8192, size=1835008, type=5\n"+
		"IMG5 : start=8224, size=511968, type=6\n"+
		"IMG6 : start=520224, size=511968, type=6\n"+
		"IMG7 : start=1032224, size=225248, type=fc\n"+
		"IMG8 : start=1257504, size=585696, type=6\n"+
		"IMG2 : start=1843200, size=8386560, type=6\n"+
		"IMG3 : start=10229760, type=fb\n", "IMG", path)
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", "-q", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
}

// Sectors reads the 512-byte sectors at lbas of path, concatenated.
func Sectors(t testing.TB, path string, lbas []int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var all []byte
	for _, lba := range lbas {
		b := make([]byte, 512)
		if _, err := f.ReadAt(b, lba*512); err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}
