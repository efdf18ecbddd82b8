package gpt_test

import (
	"encoding/binary"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// damagePrimary points the primary header at alt and leaves its CRC
// wrong: a damaged primary whose AlternateLBA leads somewhere else.
func damagePrimary(t *testing.T, path string, alt uint64) {
	t.Helper()
	h := gpttest.ReadAt(t, path, 512, 512)
	binary.LittleEndian.PutUint64(h[0x20:], alt)
	h[0x38] ^= 0xFF // disk GUID byte: the stored CRC no longer matches
	gpttest.Patch(t, path, h, 512)
}

// applyFile applies a plan to an image file and returns the undo path.
func applyFile(t *testing.T, path string, p *gpt.Plan) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if err := p.ApplyTo(f, path, fi.Size(), 512, t.TempDir()+"/undo.json"); err != nil {
		t.Fatal(err)
	}
}

var choiceParts = []gpttest.Part{
	{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 2048, Last: 40959, Name: "esp"},
	{Slot: 2, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", First: 40960, Last: 120000, Name: "data"},
}

// TestFakeBackupInsidePartition: a damaged primary points to a CRC-valid
// header planted inside partition 2; the valid backup at the last LBA
// must win (as in sgdisk), the planted one is reported and never used,
// and the repair rebuilds the primary from the real backup without
// touching the planted bytes or the backup.
func TestFakeBackupInsidePartition(t *testing.T) {
	const size = 64 << 20
	dir := t.TempDir()
	img := gpttest.SgdiskImage(t, dir, size, choiceParts)
	const fakeLBA = 100000 // inside partition 2
	fake := gpttest.NewTable(t, 512, (fakeLBA+1)*512, []gpttest.Part{
		{Slot: 1, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", First: 34, Last: 90000, Name: "evil"},
	})
	fake.WriteBackup(t, img)
	damagePrimary(t, img, fakeLBA)
	last := uint64(size/512 - 1)
	goodBackup := gpttest.ReadAt(t, img, int64(last-32)*512, 33*512)
	planted := gpttest.ReadAt(t, img, int64(fakeLBA-32)*512, 33*512)

	tb := readFile(t, img, 512)
	if tb.Backup == nil || tb.Backup.HeaderLBA != last || !tb.Backup.Valid() {
		t.Fatalf("backup used: %+v; problems %v", tb.Backup, tb.Problems)
	}
	if tb.StrayBackup != nil {
		t.Errorf("the planted header is kept as a stray backup at LBA %d", tb.StrayBackup.HeaderLBA)
	}
	if !slices.Contains(codes(tb.Problems), gpt.CodeFakeBackup) {
		t.Errorf("no %s problem: %v", gpt.CodeFakeBackup, tb.Problems)
	}
	checkSlots(t, tb, choiceParts)
	// sgdisk reads the same disk the same way.
	sg := gpttest.SgdiskList(t, img)
	if len(sg) != 2 || sg[0].First != 2048 || sg[1].Last != 120000 {
		t.Errorf("sgdisk -p of the attacked image: %+v", sg)
	}

	p, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.String(), "rebuild the damaged or missing primary GPT from the backup") {
		t.Errorf("plan:\n%s", p)
	}
	for _, w := range p.Writes {
		if w.LBA >= last-32 || (w.LBA >= fakeLBA-32 && w.LBA <= fakeLBA) {
			t.Errorf("plan writes %s at LBA %d", w.Region, w.LBA)
		}
	}
	applyFile(t, img, p)
	if string(gpttest.ReadAt(t, img, int64(last-32)*512, 33*512)) != string(goodBackup) {
		t.Error("the good backup was overwritten")
	}
	if string(gpttest.ReadAt(t, img, int64(fakeLBA-32)*512, 33*512)) != string(planted) {
		t.Error("partition data (the planted header) was overwritten")
	}
	after := readFile(t, img, 512)
	checkSlots(t, after, choiceParts)
	gpttest.SgdiskVerify(t, img)
}

// TestStaleBackupOutsidePartitions: a damaged primary points to a valid
// header outside every partition whose table differs from the backup at
// the last LBA: the one at the last LBA wins, the other is a stray.
func TestStaleBackupOutsidePartitions(t *testing.T) {
	const size = 64 << 20
	dir := t.TempDir()
	img := gpttest.SgdiskImage(t, dir, size, choiceParts)
	const altLBA = 125000 // free space after partition 2
	other := gpttest.NewTable(t, 512, (altLBA+1)*512, choiceParts[:1])
	other.WriteBackup(t, img)
	damagePrimary(t, img, altLBA)
	tb := readFile(t, img, 512)
	last := uint64(size/512 - 1)
	if tb.Backup == nil || tb.Backup.HeaderLBA != last || tb.StrayBackup == nil || tb.StrayBackup.HeaderLBA != altLBA {
		t.Fatalf("backup %+v stray %+v: %v", tb.Backup, tb.StrayBackup, tb.Problems)
	}
	checkSlots(t, tb, choiceParts)
	p, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	applyFile(t, img, p)
	checkSlots(t, readFile(t, img, 512), choiceParts)
	gpttest.SgdiskVerify(t, img)
}

// TestAmbiguousBackups: a 32 MiB disk's image restored onto a 64 MiB one
// that had its own GPT, whose backup survives at the end; then the
// primary is damaged. The backup at the old end (where the primary and
// the protective MBR point) and the stale one at the new end disagree
// and each has something speaking for it: the plan stops and says why;
// with a reference the table is rebuilt from it.
func TestAmbiguousBackups(t *testing.T) {
	const small, big = 32 << 20, 64 << 20
	dir := t.TempDir()
	imgParts := []gpttest.Part{{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 2048, Last: 40959, Name: "esp"}}
	src := gpttest.SgdiskImage(t, dir, small, imgParts)
	disk := gpttest.Sparse(t, dir, "disk.img", big)
	gpttest.NewTable(t, 512, big, []gpttest.Part{
		{Slot: 1, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", First: 34, Last: 131000, Name: "old"},
	}).Write(t, disk)
	gpttest.CopyRegions(t, src, disk, gpttest.Regions(small, 512)...)
	damagePrimary(t, disk, small/512-1)
	head := gpttest.ReadAt(t, disk, 0, 34*512)

	tb := readFile(t, disk, 512)
	if tb.Best() != nil || !slices.Contains(codes(tb.Problems), gpt.CodeBackupAmbiguous) {
		t.Fatalf("best %+v; problems %v", tb.Best(), tb.Problems)
	}
	_, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err == nil || !strings.Contains(err.Error(), "cannot be told which is right") || !strings.Contains(err.Error(), "protective MBR") {
		t.Errorf("PlanFix: %v, want a refusal saying why", err)
	}
	if string(head) != string(gpttest.ReadAt(t, disk, 0, 34*512)) {
		t.Error("disk changed")
	}
	ref := readFile(t, src, 512)
	p, err := gpt.PlanFix(tb, gpt.FixOptions{Ref: ref})
	if err != nil {
		t.Fatalf("PlanFix with the reference: %v", err)
	}
	applyFile(t, disk, p)
	checkSlots(t, readFile(t, disk, 512), imgParts)
	gpttest.SgdiskVerify(t, disk)
}
