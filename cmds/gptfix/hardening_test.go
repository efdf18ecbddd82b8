package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestUndoNamesUnique: undo file names picked in a tight loop (far more
// than one per second, or millisecond) never collide, and a name already
// taken is never handed out again.
func TestUndoNamesUnique(t *testing.T) {
	dir := t.TempDir()
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		p, err := undoFile(dir, "/dev/sda")
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("undo file name %s handed out twice (after %d names)", p, i)
		}
		seen[p] = true
		if i%2 == 0 {
			os.WriteFile(p, nil, 0o600) // taken: must not come back
		}
	}
}

// TestNotADisk: a FIFO as TARGET or as -undo FILE is refused at once
// (open(2) of a FIFO blocks until a writer comes).
func TestNotADisk(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "d.img")
	esxiImage(t, img, "5.0", 8*gib)
	for _, args := range [][]string{
		{fifo},
		{"-check", fifo},
		{"-yes", "-undo-dir", dir, fifo},
		{"-undo", fifo, "-yes", img},
		{"-ref", fifo, img},
	} {
		done := make(chan struct{})
		var code int
		var errOut string
		go func() {
			code, _, errOut = gptfix(t, args...)
			close(done)
		}()
		select {
		case <-done:
			if code != 2 || !strings.Contains(errOut, "FIFO") && !strings.Contains(errOut, "not an undo file") && !strings.Contains(errOut, "not a disk") {
				t.Errorf("gptfix %v: exit %d, want 2 with a refusal\n%s", args, code, errOut)
			}
		case <-time.After(20 * time.Second):
			w, _ := os.OpenFile(fifo, os.O_RDWR, 0) // let it go
			<-done
			w.Close()
			t.Errorf("gptfix %v blocks on the FIFO", args)
		}
	}
}

// TestReadOnlyDevice: gptfix -yes on a read-only block device fails with
// a clear message before anything else (BLKROGET), writes nothing and
// leaves no undo file.
func TestReadOnlyDevice(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.img")
	esxiImage(t, img, "5.0", 8*gib)
	os.Truncate(img, 9*gib)
	head := gpttest.ReadAt(t, img, 0, 34*512)
	loop := gpttest.Loop(t, img, "-r")
	undoDir := t.TempDir()
	code, out, errOut := gptfix(t, "-yes", "-undo-dir", undoDir, loop)
	if code != 2 || !strings.Contains(errOut, "read-only") {
		t.Errorf("gptfix -yes on a read-only device: exit %d, want 2 with \"read-only\"\n%s%s", code, out, errOut)
	}
	if ents, _ := os.ReadDir(undoDir); len(ents) != 0 {
		t.Errorf("undo file left: %v", ents)
	}
	if !bytes.Equal(head, gpttest.ReadAt(t, img, 0, 34*512)) {
		t.Error("written")
	}
}

// TestHybridMBRCommand: on a hybrid MBR made by sgdisk -h, -check is
// clean on its own disk; after a restore onto a bigger disk the repair
// leaves the MBR byte for byte, says so, and both -check and sgdisk -v
// are clean afterwards.
func TestHybridMBRCommand(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	dir := t.TempDir()
	img := filepath.Join(dir, "h.img")
	gpttest.Sparse(t, dir, "h.img", 1*gib)
	gpttest.Run(t, "sgdisk", "-n", "1:2048:+100M", "-t", "1:EF00", "-n", "2:0:+200M", "-t", "2:0700", img)
	gpttest.Run(t, "sgdisk", "-h", "2", img)
	mbr := gpttest.ReadAt(t, img, 0, 512)
	if code, out, errOut := gptfix(t, "-check", img); code != 0 {
		t.Errorf("-check on its own disk: exit %d\n%s%s", code, out, errOut)
	}
	os.Truncate(img, 2*gib)
	code, out, errOut := gptfix(t, "-yes", "-undo-dir", dir, img)
	if code != 0 || !strings.Contains(out, "hybrid MBR") {
		t.Errorf("-yes: exit %d\n%s%s", code, out, errOut)
	}
	if !bytes.Equal(mbr, gpttest.ReadAt(t, img, 0, 512)) {
		t.Error("the hybrid MBR was changed")
	}
	if code, out, errOut := gptfix(t, "-check", img); code != 0 {
		t.Errorf("-check after the repair: exit %d\n%s%s", code, out, errOut)
	}
	if out, clean := gpttest.SgdiskCheck(t, img); !clean {
		t.Errorf("sgdisk -v after the repair:\n%s", out)
	}
}
