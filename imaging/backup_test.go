package imaging

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

func TestBackup(t *testing.T) {
	gpttest.Need(t, "sgdisk", "zstd", "gzip", "sha256sum", "cmp")
	dir := t.TempDir()
	img := sgdiskImage(t, dir, 48<<20, []gpttest.Part{{Slot: 1, First: 2048, Last: 10239, Type: "EF00"}, {Slot: 5, First: 10240, Last: 90000, Type: "0700"}})
	want := sha256sum(t, img)
	for _, tc := range []struct{ comp, name, decompress string }{
		{"zstd", "b.img.zst", "zstd -dc"},
		{"gzip", "b.img.gz", "gzip -dc"},
		{"none", "b.img", "cat"},
	} {
		t.Run(tc.comp, func(t *testing.T) {
			bdir := t.TempDir()
			out := filepath.Join(bdir, tc.name)
			opt := copyOpts(t, img, out)
			opt.Compress, opt.Verify = tc.comp, true
			res := mustCopy(t, opt)
			if res.SHA256 != want || !res.Verified || !res.HasGPT {
				t.Errorf("result %+v", res)
			}
			// The independent decompressor gives back the disk.
			if o, err := exec.Command("sh", "-c", tc.decompress+" "+out+" | cmp - "+img).CombinedOutput(); err != nil {
				t.Errorf("%s | cmp: %v %s", tc.decompress, err, o)
			}
			// The manifest checks with sha256sum and names the raw image's hash.
			c := exec.Command("sha256sum", "-c", "--ignore-missing", filepath.Base(res.ManifestPath))
			c.Dir = bdir
			if o, err := c.CombinedOutput(); err != nil {
				t.Errorf("sha256sum -c: %v %s", err, o)
			}
			m, _ := os.ReadFile(res.ManifestPath)
			if !strings.Contains(string(m), want+"  b.img\n") {
				t.Errorf("manifest lacks the raw image hash:\n%s", m)
			}
			// The layout file holds the disk's exact slots.
			f, err := os.Open(res.LayoutPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			lt, err := gpt.LoadLayout(f)
			if err != nil {
				t.Fatal(err)
			}
			it := readTable(t, img, 512)
			if !bytes.Equal(lt.Best().Array, it.Primary.Array) {
				t.Errorf("layout file's entry array differs from the disk's")
			}
			// And the backup restores to the same disk.
			back := bdir + "/restored"
			mustCopy(t, copyOpts(t, out, back))
			cmpFiles(t, img, back, -1)
		})
	}
	// An existing backup is not overwritten without -yes.
	out := dir + "/exists.zst"
	os.WriteFile(out, []byte("old"), 0o644)
	opt := copyOpts(t, img, out)
	opt.Compress = "zstd"
	if _, err := Copy(context.Background(), opt); !errors.Is(err, ErrRefused) {
		t.Errorf("existing backup overwritten without -yes: %v", err)
	}
	opt.Yes = true
	mustCopy(t, opt)
	opt.Compress = "lz4"
	if _, err := Copy(context.Background(), opt); err == nil {
		t.Errorf("-compress lz4 accepted")
	}
}

func TestBackupFromBlockDevice(t *testing.T) {
	needRoot(t)
	gpttest.Need(t, "sgdisk", "zstd", "cmp")
	dir := t.TempDir()
	img := sgdiskImage(t, dir, 32<<20, testParts[:2])
	dev := gpttest.Loop(t, img)
	out := dir + "/backup.zst"
	opt := copyOpts(t, dev, out)
	opt.Compress, opt.Verify = "zstd", true
	res := mustCopy(t, opt)
	if res.LayoutPath == "" || res.Bytes != 32<<20 {
		t.Errorf("result %+v", res)
	}
	if o, err := exec.Command("sh", "-c", "zstd -dc "+out+" | cmp - "+img).CombinedOutput(); err != nil {
		t.Errorf("zstd -dc | cmp: %v %s", err, o)
	}
}

// TestBackupReadError: a failing source disk ends the backup with the LBA
// and leaves no partial image behind; -skip-bad finishes it and lists the range.
func TestBackupReadError(t *testing.T) {
	dir := t.TempDir()
	disk := dir + "/disk"
	makeImage(t, disk, 4<<20, 4096, 1, 81)
	old := faultHook
	faultHook = func(r io.ReaderAt) io.ReaderAt { return faultyReader{r, 2 << 20, 2<<20 + 512} }
	defer func() { faultHook = old }()
	out := dir + "/b.zst"
	opt := copyOpts(t, disk, out)
	opt.Compress = "zstd"
	_, err := Copy(context.Background(), opt)
	if err == nil || !strings.Contains(err.Error(), "LBA 4096") {
		t.Fatalf("want a read error at LBA 4096, got %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a partial backup was left behind")
	}
	opt.SkipBad = true
	res := mustCopy(t, opt)
	if len(res.BadRanges) != 1 || res.BadRanges[0].Start != 2<<20 {
		t.Errorf("bad ranges %+v", res.BadRanges)
	}
}
