package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/esxitest"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// fourK makes a 4Kn ESXi 6.7 image of size bytes with the independent
// encoder (sgdisk cannot write 4Kn tables into a file).
func fourK(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	img := gpttest.Sparse(t, dir, name, size)
	gpttest.NewTable(t, 4096, size, esxitest.Parts(esxitest.Layout(t, "6.7", size, 4096), 4096, false)).Write(t, img)
	return img
}

// gptRegions returns the bytes of every place a 512- or 4096-byte GPT
// could be written on an image of size bytes.
func gptRegions(t *testing.T, path string, size int64) []byte {
	t.Helper()
	return append(gpttest.ReadAt(t, path, 0, 34*4096), gpttest.ReadAt(t, path, size-34*4096, 34*4096)...)
}

// TestFourKnNeverOverwritten: a 4Kn image is read as 4Kn without -sector;
// a 512-byte reference is refused; with -sector 512 forced, the valid
// 4096-byte GPT stops any rebuild. Nothing is written in any of these.
func TestFourKnNeverOverwritten(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	dir := t.TempDir()
	const size = 10 * gib
	y4k := fourK(t, dir, "Y4K.img", size)
	x512 := filepath.Join(dir, "X512.img")
	esxiImage(t, x512, "6.7", size)
	before := gptRegions(t, y4k, size)

	if code, out, errOut := gptfix(t, "-check", y4k); code != 0 || !strings.Contains(out, "4096-byte sectors") || strings.Contains(out+errOut, "-ref") {
		t.Errorf("gptfix -check Y4K.img: exit %d, want 0 read with 4096-byte sectors\n%s%s", code, out, errOut)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-ref", x512, "-yes", "-undo-dir", dir, y4k}, "512-byte sectors"},
		{[]string{"-sector", "512", "-ref", x512, "-yes", "-undo-dir", dir, y4k}, "also shows a valid GPT when read with 4096-byte sectors"},
		{[]string{"-sector", "512", "-esxi", "-yes", "-undo-dir", dir, y4k}, ""},
	}
	for _, c := range cases {
		code, out, errOut := gptfix(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("gptfix %v: exit %d, want 2 with %q\n%s%s", c.args, code, c.want, out, errOut)
		}
		if !bytes.Equal(before, gptRegions(t, y4k, size)) {
			t.Fatalf("gptfix %v wrote to the 4Kn image", c.args)
		}
	}
	// A damaged 4Kn image is repaired as 4Kn without -sector.
	gpttest.Patch(t, y4k, make([]byte, 4096), 4096) // primary header gone
	if code, out, errOut := gptfix(t, "-yes", "-undo-dir", dir, y4k); code != 0 {
		t.Fatalf("repair of the 4Kn image: exit %d\n%s%s", code, out, errOut)
	}
	if !bytes.Equal(before, gptRegions(t, y4k, size)) {
		t.Error("the repaired 4Kn image differs from the original")
	}
}

// TestFourKnOnDevice: a 512-byte-sector device holding a 4Kn table (a 4Kn
// image written to a 512e disk) is never given a 512-byte GPT.
func TestFourKnOnDevice(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	dir := t.TempDir()
	const size = 10 * gib
	y4k := fourK(t, dir, "Y4K.img", size)
	x512 := filepath.Join(dir, "X512.img")
	esxiImage(t, x512, "6.7", size)
	before := gptRegions(t, y4k, size)
	loop := gpttest.Loop(t, y4k) // 512-byte sectors
	code, out, errOut := gptfix(t, "-ref", x512, "-yes", "-undo-dir", dir, loop)
	if code != 2 || !strings.Contains(errOut, "also shows a valid GPT when read with 4096-byte sectors") {
		t.Errorf("gptfix -ref X512 -yes %s: exit %d\n%s%s", loop, code, out, errOut)
	}
	if !bytes.Equal(before, gptRegions(t, y4k, size)) {
		t.Error("a 512-byte GPT was written over the 4Kn table")
	}
}
