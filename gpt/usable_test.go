package gpt_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestLastUsablePastEnd: headers whose LastUsableLBA runs past the disk
// end (the backup at the right place) are repaired as sgdisk -e repairs
// them: the usable range ends just before the backup array. sgdisk -e on
// a copy gives the same LastUsableLBA.
func TestLastUsablePastEnd(t *testing.T) {
	const size = 64 << 20
	const last = size/512 - 1
	dir := t.TempDir()
	img := gpttest.SgdiskImage(t, dir, size, choiceParts)
	for _, lba := range []uint64{1, last} {
		gpttest.RewriteCopy(t, img, 512, lba, func(h, a []byte) { binary.LittleEndian.PutUint64(h[0x30:], last+1000) })
	}
	sg := dir + "/sgdisk-e.img"
	gpttest.Run(t, "cp", "--sparse=always", img, sg)
	gpttest.Run(t, "sgdisk", "-e", sg)
	want := gpttest.Decode(t, sg, 512, 1).LastUsable

	tb := readFile(t, img, 512)
	p, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err != nil {
		t.Fatalf("PlanFix: %v", err)
	}
	if p.Empty() || !strings.Contains(p.String(), "ran past the disk's last LBA") {
		t.Errorf("plan:\n%s", p)
	}
	applyFile(t, img, p)
	for _, lba := range []uint64{1, last} {
		if got := gpttest.Decode(t, img, 512, lba); got.LastUsable != want || !got.HdrOK {
			t.Errorf("header at LBA %d: LastUsableLBA %d (CRC ok %v), sgdisk -e makes %d", lba, got.LastUsable, got.HdrOK, want)
		}
	}
	sgdiskClean(t, img)
	if p, err := gpt.PlanFix(readFile(t, img, 512), gpt.FixOptions{}); err != nil || !p.Empty() {
		t.Errorf("second plan: %v\n%s", err, p)
	}
}

// TestPlanErrorNamesBadEntry: an entry outside its own table's usable
// range, or ending before it starts, is called a bad entry, not a disk
// too small; a truly shrunk disk is still called too small.
func TestPlanErrorNamesBadEntry(t *testing.T) {
	const size = 64 << 20
	dir := t.TempDir()
	cases := []struct {
		name string
		part gpttest.Part
		want string
	}{
		{"before-first-usable", gpttest.Part{Slot: 1, Type: choiceParts[0].Type, First: 20, Last: 4000}, "outside its own table's usable range"},
		{"ends-before-start", gpttest.Part{Slot: 1, Type: choiceParts[0].Type, First: 5000, Last: 4000}, "ends (LBA 4000) before it starts"},
		{"past-own-last-usable", gpttest.Part{Slot: 1, Type: choiceParts[0].Type, First: 2048, Last: size/512 - 10}, "outside its own table's usable range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := gpttest.Sparse(t, dir, c.name+".img", size)
			gpttest.NewTable(t, 512, size, []gpttest.Part{c.part}).Write(t, img)
			_, err := gpt.PlanFix(readFile(t, img, 512), gpt.FixOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "smaller") {
				t.Errorf("PlanFix: %v, want %q and no word of a smaller disk", err, c.want)
			}
		})
	}
	// A disk really too small for its partitions.
	img := gpttest.Sparse(t, dir, "big.img", size)
	gpttest.NewTable(t, 512, size, choiceParts).Write(t, img)
	small := gpttest.Sparse(t, dir, "small.img", 32<<20)
	gpttest.CopyRegions(t, img, small, [2]int64{0, 34 * 512})
	_, err := gpt.PlanFix(readFile(t, small, 512), gpt.FixOptions{})
	if err == nil || !strings.Contains(err.Error(), "smaller than the table needs") {
		t.Errorf("shrunk: %v", err)
	}
}
