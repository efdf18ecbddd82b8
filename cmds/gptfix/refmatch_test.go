package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestReferenceSharesNothing: a reference of another disk (not one
// partition in common) is an error, exit 2, for -check and -yes alike,
// and nothing is written; a reference that matches part of the disk is
// reported as a partial match (-check exits 1) without notes that
// contradict each other.
func TestReferenceSharesNothing(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	gpttest.Sparse(t, dir, "disk.img", 1*gib)
	gpttest.Run(t, "sgdisk", "-n", "1:2048:+100M", "-t", "1:EF00", "-n", "2:0:+200M", "-t", "2:8300", "-n", "3:0:+100M", "-t", "3:8300", disk)
	wrong := filepath.Join(dir, "wrong.img")
	gpttest.Sparse(t, dir, "wrong.img", 1*gib)
	gpttest.Run(t, "sgdisk", "-n", "1:4096:+50M", "-t", "1:8300", "-n", "2:0:+300M", "-t", "2:8200", wrong)
	head := gpttest.ReadAt(t, disk, 0, 34*512)

	for _, args := range [][]string{
		{"-check", "-ref", wrong, disk},
		{"-ref", wrong, disk},
		{"-yes", "-undo-dir", dir, "-ref", wrong, disk},
	} {
		code, out, errOut := gptfix(t, args...)
		if code != 2 || !strings.Contains(errOut, "the reference shares no partition with this disk") {
			t.Errorf("gptfix %v: exit %d, want 2 with \"the reference shares no partition with this disk\"\n%s%s", args, code, out, errOut)
		}
		if strings.Contains(out, "Nothing to do") || strings.Contains(out, "Notes:") {
			t.Errorf("gptfix %v: contradictory output:\n%s", args, out)
		}
	}
	if !bytes.Equal(head, gpttest.ReadAt(t, disk, 0, 34*512)) {
		t.Error("a refused run wrote to the disk")
	}

	// Partial: the reference is the disk with partition 3 replaced.
	ref := filepath.Join(dir, "ref.img")
	cp(t, disk, ref)
	gpttest.Run(t, "sgdisk", "-d", "3", "-n", "3:0:+50M", "-t", "3:8300", ref)
	code, out, errOut := gptfix(t, "-check", "-ref", ref, disk)
	if code != 1 || !strings.Contains(out, "matches only part of this disk: 2 of the disk's 3 partition(s) are in the reference, which has 3") {
		t.Errorf("partial: exit %d, want 1 and the partial match said\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, "slot 3 is left empty") {
		t.Errorf("partial: says slot 3 is left empty although the disk's partition 3 stays there:\n%s", out)
	}
	// The disk itself as reference: a full match.
	if code, out, errOut := gptfix(t, "-check", "-ref", disk, disk); code != 0 || strings.Contains(out, "only part") {
		t.Errorf("self: exit %d\n%s%s", code, out, errOut)
	}
}
