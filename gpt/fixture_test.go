package gpt_test

// Test fixtures are built without the package under test, by
// internal/gpttest (sgdisk and an independent hand-written GPT encoder);
// what follows only adapts the esxi package's layouts to it.

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/internal/esxitest"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

const pfGiB = int64(1) << 30

func esxiLayout(t testing.TB, v string, size int64, ss int) []gpttest.Part {
	t.Helper()
	return esxitest.Parts(esxitest.Layout(t, esxi.Version(v), size, ss), ss, true)
}

// pfImage makes a sparse image of size bytes holding the ESXi layout of
// version v: sgdisk (-a 1 -n ...) for 512-byte sectors, the independent
// encoder for 4096. It returns the path and the layout's parts.
func pfImage(t testing.TB, dir, name string, v esxi.Version, size int64, ss int) (string, []esxi.Part) {
	t.Helper()
	parts := esxitest.Layout(t, v, size, ss)
	path := gpttest.Sparse(t, dir, name, size)
	if ss == 512 {
		gpttest.Sgdisk(t, path, esxitest.Parts(parts, ss, true))
		return path, parts
	}
	gpttest.NewTable(t, ss, size, esxitest.Parts(parts, ss, true)).Write(t, path)
	return path, parts
}

// pfExtents are the byte ranges of the layout's partitions, for
// gpttest.Markers.
func pfExtents(parts []esxi.Part) [][2]int64 {
	var r [][2]int64
	for _, p := range parts {
		r = append(r, [2]int64{int64(p.First) * 512, int64(p.Last+1) * 512})
	}
	return r
}

// pfLayoutSlots is what gpttest.SgdiskSlots should say for a layout.
func pfLayoutSlots(parts []esxi.Part) []string {
	var s []string
	for _, p := range esxi.BySlot(parts) {
		s = append(s, fmt.Sprintf("%d:%d-%d", p.Slot, p.First, p.Last))
	}
	return s
}

// pfCheckSlots checks that sgdisk -p lists exactly the layout's entries.
func pfCheckSlots(t testing.TB, path string, parts []esxi.Part) {
	t.Helper()
	if got, want := gpttest.SgdiskSlots(t, path), pfLayoutSlots(parts); !reflect.DeepEqual(got, want) {
		t.Errorf("sgdisk -p entries %v, want %v", got, want)
	}
}

// pfCheckSfdisk checks with sfdisk --json that every partition of the
// layout is listed under its entry number (the N of the node name) with
// its start and size.
func pfCheckSfdisk(t testing.TB, path string, parts []esxi.Part) {
	t.Helper()
	d := gpttest.SfdiskJSON(t, path)
	got := map[string]string{}
	for _, p := range d.PartitionTable.Partitions {
		got[strings.TrimPrefix(p.Node, path)] = fmt.Sprintf("%d+%d", p.Start, p.Size)
	}
	if d.PartitionTable.Label != "gpt" || len(got) != len(parts) {
		t.Errorf("sfdisk --json: label %q, %d partitions, want gpt with %d", d.PartitionTable.Label, len(got), len(parts))
	}
	for _, p := range parts {
		if want := fmt.Sprintf("%d+%d", p.First, p.Last-p.First+1); got[fmt.Sprint(p.Slot)] != want {
			t.Errorf("sfdisk --json: partition %d is %q, want %s", p.Slot, got[fmt.Sprint(p.Slot)], want)
		}
	}
}
