package qemutests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/imaging"
)

// smallLayout is an ESXi 6.0 style table scaled down to a 24 MiB disk:
// the same slots (1 EFI system, 5 and 6 boot banks, 7 vmkDiagnostic, 8
// store; 2-4 empty), type GUIDs and 32-sector gaps, a 64th of the sizes.
// Decompressing and hashing a 1 GiB image in a TCG guest costs about two
// minutes; this one a few seconds, and the restore, fix and verify steps
// see a GPT of the same shape.
var smallLayout = []struct {
	slot        int
	first, last int64 // LBAs of 512 bytes
	typ         string
}{
	{1, 64, 8191, esxi.TypeEFISystem},
	{5, 8224, 16383, esxi.TypeBasicData},
	{6, 16416, 24575, esxi.TypeBasicData},
	{7, 24608, 28671, esxi.TypeVMKDiagnostic},
	{8, 28704, 40959, esxi.TypeBasicData},
}

// smallImageSize is the size of the disk smallLayout describes.
const smallImageSize = 24 << 20

// makeSmallRestoreImage writes a sparse image with smallLayout's table
// (sgdisk) and 256 KiB of distinct data at the start and the middle of
// every partition, zstd-compressed, with its block map: a restoreImage
// for tests that do not boot the restored disk.
func makeSmallRestoreImage(t testing.TB) *restoreImage {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "small.img")
	if err := BlankDisk(path, smallImageSize); err != nil {
		t.Fatal(err)
	}
	args := []string{"-U", "5B2A3C4D-0000-4000-8000-00000000E5C1"}
	for _, p := range smallLayout {
		args = append(args, fmt.Sprintf("-n=%d:%d:%d", p.slot, p.first, p.last), fmt.Sprintf("-t=%d:%s", p.slot, p.typ),
			fmt.Sprintf("-u=%d:5B2A3C4D-0000-4000-8000-0000000000%02d", p.slot, p.slot))
	}
	if out, err := exec.Command("sgdisk", append(args, path)...).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for _, p := range smallLayout {
		for _, at := range []int64{p.first, (p.first + p.last) / 2} {
			for i := range chunk {
				chunk[i] = byte(int64(i)*131 + at + int64(i>>9)*int64(p.slot))
			}
			if _, err := f.WriteAt(chunk, at*512); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := ReadRawGPT(path, 512)
	if err != nil {
		t.Fatal(err)
	}
	r := &restoreImage{img: &Image{Path: path, SectorSize: 512, GPT: g}, zst: path + ".zst"}
	if r.sha, err = CompressZstd(path, r.zst); err != nil {
		t.Fatal(err)
	}
	bm, err := imaging.MakeBmap(context.Background(), imaging.Options{Src: path, Dst: r.zst + ".bmap"})
	if err != nil {
		t.Fatal(err)
	}
	if bm.SHA256 != r.sha {
		t.Fatalf("block map: SHA-256 %s, zstd's input hashed to %s", bm.SHA256, r.sha)
	}
	r.bmap = bm.BmapPath
	if r.digest, err = PartitionDigests(path, 512); err != nil {
		t.Fatal(err)
	}
	return r
}
