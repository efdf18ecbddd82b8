package gpt_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// hybridImage makes a 64 MiB image with two GPT partitions and a hybrid
// MBR made by sgdisk -h 2 (0xEE record over LBA 1-40959, then a 0x83
// record for partition 2).
func hybridImage(t *testing.T, dir string) string {
	t.Helper()
	gpttest.Need(t, "sgdisk")
	img := gpttest.SgdiskImage(t, dir, 64<<20, choiceParts)
	gpttest.Run(t, "sgdisk", "-h", "2", img)
	mbr := gpttest.ReadAt(t, img, 0, 512)
	if mbr[446+4] != 0xEE || binary.LittleEndian.Uint32(mbr[446+12:]) != 2047 && binary.LittleEndian.Uint32(mbr[446+12:]) != 40959 || mbr[462+4] == 0 {
		t.Fatalf("sgdisk -h made an unexpected MBR: % x", mbr[446:510])
	}
	return img
}

// sgdiskClean runs sgdisk -v and fails unless it finds no problems.
func sgdiskClean(t *testing.T, path string) {
	t.Helper()
	if out := gpttest.Run(t, "sgdisk", "-v", path); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", path, out)
	}
}

// TestHybridMBR: a hybrid MBR is not a damaged protective MBR. On its own
// disk there is nothing to do; on a bigger disk (a restore onto another
// size, which imaging repairs with PlanFix and empty options) the backup
// moves but the MBR stays byte for byte, the plan says so, and sgdisk -v
// finds nothing wrong afterwards (stretching the 0xEE record over the
// disk makes it overlap the other record).
func TestHybridMBR(t *testing.T) {
	dir := t.TempDir()
	img := hybridImage(t, dir)
	mbr := gpttest.ReadAt(t, img, 0, 512)
	tb := readFile(t, img, 512)
	if len(allCodes(tb)) != 0 {
		t.Errorf("a hybrid MBR on its own disk: problems %v", allCodes(tb))
	}
	if p, err := gpt.PlanFix(tb, gpt.FixOptions{}); err != nil || !p.Empty() {
		t.Errorf("plan on its own disk: %v\n%s", err, p)
	}

	if err := os.Truncate(img, 128<<20); err != nil {
		t.Fatal(err)
	}
	tb = readFile(t, img, 512)
	if slices.Contains(codes(tb.Problems), gpt.CodeMBRSize) {
		t.Errorf("grown: the hybrid MBR's 0xEE size is reported: %v", tb.Problems)
	}
	p, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range p.Writes {
		if w.LBA == 0 {
			t.Errorf("the plan writes the hybrid MBR:\n%s", p)
		}
	}
	if !strings.Contains(p.String(), "hybrid MBR") {
		t.Errorf("the plan does not say it leaves the hybrid MBR alone:\n%s", p)
	}
	applyFile(t, img, p)
	if !bytes.Equal(mbr, gpttest.ReadAt(t, img, 0, 512)) {
		t.Error("the MBR changed")
	}
	sgdiskClean(t, img)
	if after := readFile(t, img, 512); len(allCodes(after)) != 0 {
		t.Errorf("after the fix: %v", allCodes(after))
	}
}

// TestHybridMBROverlap: a hybrid MBR whose 0xEE record was stretched over
// the whole disk (what gptfix used to do) overlaps the other record;
// that is reported and the repair ends the 0xEE record just before it,
// leaving the other records alone; sgdisk -v then agrees.
func TestHybridMBROverlap(t *testing.T) {
	dir := t.TempDir()
	img := hybridImage(t, dir)
	mbr := gpttest.ReadAt(t, img, 0, 512)
	second := binary.LittleEndian.Uint32(mbr[462+8:])
	bad := bytes.Clone(mbr)
	binary.LittleEndian.PutUint32(bad[446+12:], 64<<20/512-1)
	gpttest.Patch(t, img, bad, 0)
	if out, _ := gpttest.SgdiskCheck(t, img); !strings.Contains(out, "overlap") {
		t.Fatalf("sgdisk -v does not see the stretched hybrid MBR as overlapping:\n%s", out)
	}
	tb := readFile(t, img, 512)
	if !slices.Contains(codes(tb.Problems), gpt.CodeMBRSize) {
		t.Fatalf("the overlap is not reported: %v", tb.Problems)
	}
	p, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.String(), "overlaps MBR record 2") {
		t.Errorf("plan:\n%s", p)
	}
	applyFile(t, img, p)
	got := gpttest.ReadAt(t, img, 0, 512)
	if n := binary.LittleEndian.Uint32(got[446+12:]); n != second-1 {
		t.Errorf("0xEE record size %d, want %d (ending before record 2 at LBA %d)", n, second-1, second)
	}
	if !bytes.Equal(got[462:510], mbr[462:510]) || !bytes.Equal(got[:446], mbr[:446]) {
		t.Error("other MBR bytes changed")
	}
	sgdiskClean(t, img)
}
