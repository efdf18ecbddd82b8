// Package esxitest adapts the esxi package's layouts to internal/gpttest's
// independent fixture builders, for tests of the packages above both.
package esxitest

import (
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
