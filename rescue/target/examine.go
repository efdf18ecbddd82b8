package target

import (
	"bytes"
	"fmt"
	"io"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/rescue/inventory"
)

// RescueLabel is the FAT volume label of the rescue USB stick's EFI
// system partition (initramfs/build.sh); a disk with a FAT partition so
// labelled is the rescue medium and is never a target.
const RescueLabel = "RESCUE"

// blankBytes is how much of the start of a disk must be zero for it to
// count as blank.
const blankBytes = 1 << 20

// Examine reads the disk (read-only) and fills in Facts. ref, when not
// nil, is the reference table (the image's or a layout file's) the disk
// is compared with. medium lists device paths known to be the rescue
// medium (e.g. holding a mounted stick).
func Examine(d inventory.Disk, ref *gpt.Table, medium map[string]bool) Facts {
	f := Facts{Disk: d, RescueMedium: medium[d.Path]}
	dev, err := gpt.OpenDevice(d.Path, d.SectorSize, false)
	if err != nil {
		f.ReadErr = err.Error()
		return f
	}
	defer dev.Close()
	return examine(f, dev.File, dev.Size, dev.SectorSize, ref)
}

func examine(f Facts, r io.ReaderAt, size int64, ss int, ref *gpt.Table) Facts {
	t, err := gpt.Read(r, size, ss)
	if err != nil {
		f.ReadErr = err.Error()
		return f
	}
	f.HasGPT = t.Best() != nil
	if !f.HasGPT {
		n := int64(blankBytes)
		if n > size {
			n = size
		}
		head := make([]byte, n)
		if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
			f.ReadErr = err.Error()
			return f
		}
		f.Blank = bytes.Count(head, []byte{0}) == len(head)
		return f
	}
	for _, s := range t.Slots() {
		if !s.Used() {
			continue
		}
		if IsRescueFAT(r, int64(s.Entry().First)*int64(ss)) {
			f.RescueMedium = true
		}
	}
	if m, err := esxi.Recognize(t); err == nil {
		f.ESXi, f.ESXiWhy = m.Family, m.Text
	} else {
		f.ESXiWhy = err.Error()
	}
	if ref != nil {
		diff := gpt.Compare(ref, t)
		// Same partitions (in any slots), and at least one recognised by
		// its unique GUID: another install of the same layout matches
		// only by position and is a different disk.
		newGUID := map[int]bool{}
		for _, s := range diff.MatchedByPosition {
			newGUID[s] = true
		}
		for _, c := range diff.Changed {
			for _, fc := range c.Fields {
				if fc.Field == "unique" {
					newGUID[c.RefSlot] = true
				}
			}
		}
		f.RefMatch = len(diff.Added) == 0 && len(diff.Removed) == 0 && len(diff.Mapping) > len(newGUID)
		f.RefWhy = diff.Verdict
	}
	return f
}

// IsRescueFAT reports whether the FAT boot sector at off carries the
// rescue stick's volume label (FAT32 at 0x47, FAT12/16 at 0x2B).
func IsRescueFAT(r io.ReaderAt, off int64) bool {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, off); err != nil || b[510] != 0x55 || b[511] != 0xAA {
		return false
	}
	want := []byte(fmt.Sprintf("%-11s", RescueLabel))
	return bytes.Equal(b[0x47:0x47+11], want) || bytes.Equal(b[0x2B:0x2B+11], want)
}
