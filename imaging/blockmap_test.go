package imaging

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/bmap"
	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

func TestBmapCandidates(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want []string
	}{
		{"/i/esxi.img", []string{"/i/esxi.img.bmap", "/i/esxi.bmap"}},
		{"/i/esxi.img.zst", []string{"/i/esxi.img.zst.bmap", "/i/esxi.img.bmap", "/i/esxi.bmap"}},
		{"disk", []string{"disk.bmap"}},
		{"/a.b/disk", []string{"/a.b/disk.bmap"}},
	} {
		if got := bmapCandidates(tc.src); !slices.Equal(got, tc.want) {
			t.Errorf("bmapCandidates(%q) = %q, want %q", tc.src, got, tc.want)
		}
	}
}

// sparseImage makes a 16 MiB image, about a third of it data in 1 MiB blocks (starting with
// data, so the held-back head is not all zeros), and its block map.
func sparseImage(t *testing.T, dir string) (img string, m *bmap.Map) {
	t.Helper()
	img = filepath.Join(dir, "esxi.img")
	makeImage(t, img, 16<<20, 1<<20, 0.3, 3)
	fillRandom(t, img, 0, 64<<10, 4)
	res, err := MakeBmap(context.Background(), copyOpts(t, img, ""))
	if err != nil {
		t.Fatal(err)
	}
	if res.BmapPath != img+".bmap" || res.SHA256 != sha256sum(t, img) || res.BmapRanges == 0 {
		t.Fatalf("MakeBmap: %+v (sha256sum %s)", res, sha256sum(t, img))
	}
	m, err = bmap.ReadFile(res.BmapPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Ranges) < 2 {
		t.Fatalf("fixture: want at least 2 ranges, the map has %d", len(m.Ranges))
	}
	return img, m
}

// TestRestoreWithBmap: the map next to the image is found, only mapped
// ranges are read, and the image's SHA-256 comes from the map; the copy
// is byte-identical (cmp) and the SHA-256 is sha256sum's.
func TestRestoreWithBmap(t *testing.T) {
	gpttest.Need(t, "cmp", "sha256sum")
	dir := t.TempDir()
	img, m := sparseImage(t, dir)
	out := dir + "/out"
	res := mustCopy(t, copyOpts(t, img, out))
	cmpFiles(t, img, out, -1)
	if res.SHA256From != "bmap" || res.BmapPath != img+".bmap" || res.BmapRanges != len(m.Ranges) {
		t.Errorf("SHA256From %q, BmapPath %q, BmapRanges %d (map has %d ranges)", res.SHA256From, res.BmapPath, res.BmapRanges, len(m.Ranges))
	}
	if want := sha256sum(t, img); res.BmapSHA256 != want || res.SHA256 != "" {
		t.Errorf("SHA-256 %q, claimed by the map %s, sha256sum says %s", res.SHA256, res.BmapSHA256, want)
	}

	// -no-bmap hashes everything and gets the same SHA-256.
	opt := copyOpts(t, img, dir+"/out2")
	opt.NoBmap = true
	res2 := mustCopy(t, opt)
	if res2.SHA256From != "stream" || res2.BmapPath != "" || res2.SHA256 != res.BmapSHA256 {
		t.Errorf("-no-bmap: %q %q %s", res2.SHA256From, res2.BmapPath, res2.SHA256)
	}

	// A right -sha256 passes, a wrong one fails before anything is written.
	opt = copyOpts(t, img, dir+"/out3")
	opt.SHA256 = res.SHA256
	mustCopy(t, opt)
	opt = copyOpts(t, img, dir+"/out4")
	opt.SHA256 = strings.Repeat("ab", 32)
	if _, err := Copy(context.Background(), opt); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("wrong -sha256 with a map: %v", err)
	}
	if _, err := os.Stat(dir + "/out4"); err == nil {
		t.Errorf("the target was created despite the checksum mismatch")
	}
}

// TestBmapMismatch: an image changed after its map was made is refused as
// a checksum error, and the target's partition-table area stays untouched.
func TestBmapMismatch(t *testing.T) {
	gpttest.Need(t, "cmp", "sha256sum")
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, img string, m *bmap.Map)
		want   string
	}{
		{"byte in a mapped range", func(t *testing.T, img string, m *bmap.Map) {
			r := m.Ranges[len(m.Ranges)/2]
			off, _ := m.ByteRange(r)
			gpttest.Patch(t, img, []byte{^gpttest.ReadAt(t, img, off+100, 1)[0]}, off+100)
		}, "checksum"},
		{"data outside the map", func(t *testing.T, img string, m *bmap.Map) {
			// The first gap between two ranges.
			_, end := m.ByteRange(m.Ranges[0])
			gpttest.Patch(t, img, []byte{0x55}, end+4096*3)
		}, "outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img, m := sparseImage(t, dir)
			tc.change(t, img, m)
			out := dir + "/disk"
			if err := os.WriteFile(out, make([]byte, 16<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			opt := copyOpts(t, img, out)
			_, err := Copy(context.Background(), opt)
			if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "-no-bmap") {
				t.Fatalf("want a checksum error mentioning %q and -no-bmap, got %v", tc.want, err)
			}
			t.Logf("refused: %v", err)
			if head := gpttest.ReadAt(t, out, 0, headLen); !zeros.Is(head) {
				t.Errorf("the image's head was written despite the mismatch")
			}
			// Without the map the (changed) image restores and hashes as it is.
			opt.NoBmap = true
			res := mustCopy(t, opt)
			cmpFiles(t, img, out, -1)
			if res.SHA256 != sha256sum(t, img) {
				t.Errorf("-no-bmap SHA-256 %s differs from sha256sum", res.SHA256)
			}
		})
	}
}

// TestBmapOfAnotherImage: a map whose image size differs is refused
// before the target is touched.
func TestBmapOfAnotherImage(t *testing.T) {
	dir := t.TempDir()
	img, _ := sparseImage(t, dir)
	other := dir + "/other.img"
	makeImage(t, other, 8<<20, 64<<10, 0.5, 8)
	opt := copyOpts(t, other, dir+"/out")
	opt.Bmap = img + ".bmap"
	_, err := Copy(context.Background(), opt)
	if err == nil || !strings.Contains(err.Error(), "belongs to another image") {
		t.Fatalf("want a refusal of the other image's map, got %v", err)
	}
	if _, err := os.Stat(dir + "/out"); err == nil {
		t.Errorf("the target was created")
	}
}

// TestBmaptoolMaps: a map made by bmaptool itself (no image SHA-256) is
// used for the range checks while the stream is hashed; bmaptool copies
// with imgcopy's map (cmp), compressed too.
func TestBmaptoolMaps(t *testing.T) {
	gpttest.Need(t, "cmp", "sha256sum", "bmaptool", "zstd")
	dir := t.TempDir()
	img, _ := sparseImage(t, dir)
	ours := img + ".bmap"
	theirs := dir + "/bmaptool.bmap"
	gpttest.Run(t, "bmaptool", "create", "-o", theirs, img)

	opt := copyOpts(t, img, dir+"/out")
	opt.Bmap = theirs
	res := mustCopy(t, opt)
	cmpFiles(t, img, dir+"/out", -1)
	if res.SHA256From != "stream" || res.BmapPath != theirs || res.BmapRanges == 0 || res.SHA256 != sha256sum(t, img) {
		t.Errorf("with bmaptool's map: %+v", res)
	}

	gpttest.Run(t, "bmaptool", "copy", "--bmap", ours, img, dir+"/bt.out")
	cmpFiles(t, img, dir+"/bt.out", -1)

	// A zstd backup carries a map of the uncompressed image; the restore
	// from the .zst finds it, and bmaptool copies the .zst with it.
	zst := dir + "/backup.img.zst"
	bopt := copyOpts(t, img, zst)
	bopt.Compress = "zstd"
	bres := mustCopy(t, bopt)
	if bres.BmapPath != zst+".bmap" {
		t.Fatalf("backup wrote no block map: %+v", bres)
	}
	res = mustCopy(t, copyOpts(t, zst, dir+"/out.zst"))
	cmpFiles(t, img, dir+"/out.zst", -1)
	if res.SHA256From != "bmap" || res.BmapSHA256 != sha256sum(t, img) {
		t.Errorf("restore of the zstd backup: from %q, %s", res.SHA256From, res.BmapSHA256)
	}
	gpttest.Run(t, "bmaptool", "copy", "--bmap", zst+".bmap", zst, dir+"/bt.zst.out")
	cmpFiles(t, img, dir+"/bt.zst.out", -1)
}

// TestBmapOverHTTP: -bmap takes a URL; the image streams over HTTP and
// its SHA-256 still comes from the map.
func TestBmapOverHTTP(t *testing.T) {
	gpttest.Need(t, "cmp", "sha256sum")
	dir := t.TempDir()
	img, _ := sparseImage(t, dir)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	opt := copyOpts(t, srv.URL+"/esxi.img", dir+"/out")
	opt.Bmap = srv.URL + "/esxi.img.bmap"
	res := mustCopy(t, opt)
	cmpFiles(t, img, dir+"/out", -1)
	if res.SHA256From != "bmap" || res.BmapSHA256 != sha256sum(t, img) {
		t.Errorf("from %q, %s", res.SHA256From, res.BmapSHA256)
	}
	opt = copyOpts(t, srv.URL+"/esxi.img", dir+"/out2")
	opt.Bmap = srv.URL + "/missing.bmap"
	if _, err := Copy(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing map: %v", err)
	}
}

// TestMakeBmapRefusesOverwrite: an existing map is replaced only with Yes,
// and never is the image or a device.
func TestMakeBmapRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	img, _ := sparseImage(t, dir)
	if _, err := MakeBmap(context.Background(), copyOpts(t, img, "")); !errors.Is(err, ErrRefused) {
		t.Errorf("second MakeBmap: want ErrRefused, got %v", err)
	}
	opt := copyOpts(t, img, "")
	opt.Yes = true
	if _, err := MakeBmap(context.Background(), opt); err != nil {
		t.Errorf("MakeBmap -yes: %v", err)
	}
	// Never onto the image itself or a device, even with Yes.
	sum := sha256sum(t, img)
	for _, dst := range []string{img, "/dev/null"} {
		opt.Dst = dst
		if _, err := MakeBmap(context.Background(), opt); !errors.Is(err, ErrRefused) {
			t.Errorf("MakeBmap onto %s: want ErrRefused, got %v", dst, err)
		}
	}
	if sha256sum(t, img) != sum {
		t.Errorf("the image changed")
	}
	// A backup writes its own map; -bmap is a restore's.
	bopt := copyOpts(t, img, filepath.Join(t.TempDir(), "b.img"))
	bopt.Compress, bopt.Bmap = "none", img+".bmap"
	if _, err := Copy(context.Background(), bopt); err == nil || !strings.Contains(err.Error(), "writes its own") {
		t.Errorf("backup with -bmap: %v", err)
	}
}

// TestBmapCannotOverrideSHA256: a tampered image beside a re-sealed map
// (ranges of the tampered image, the good image's SHA-256 recorded, a
// valid file checksum) must not pass -sha256 of the good image: the
// expected hash is compared with the bytes restored, exit 1, head
// unwritten. Without -sha256 the map's claim is reported as a claim.
func TestBmapCannotOverrideSHA256(t *testing.T) {
	gpttest.Need(t, "sha256sum")
	dir := t.TempDir()
	img, m := sparseImage(t, dir)
	good := sha256sum(t, img)
	// Tamper with a mapped byte, then re-seal a map of the tampered image
	// that claims the good image's SHA-256.
	off, _ := m.ByteRange(m.Ranges[len(m.Ranges)-1])
	gpttest.Patch(t, img, []byte{^gpttest.ReadAt(t, img, off+7, 1)[0]}, off+7)
	os.Remove(img + ".bmap")
	if _, err := MakeBmap(context.Background(), copyOpts(t, img, "")); err != nil {
		t.Fatal(err)
	}
	forged, err := bmap.ReadFile(img + ".bmap")
	if err != nil {
		t.Fatal(err)
	}
	forged.ImageSHA256, _ = hex.DecodeString(good)
	if err := os.WriteFile(img+".bmap", forged.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := bmap.ReadFile(img + ".bmap"); err != nil {
		t.Fatalf("fixture: the forged map does not parse: %v", err)
	}

	out := dir + "/disk"
	if err := os.WriteFile(out, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	opt := copyOpts(t, img, out)
	opt.SHA256 = good
	res, err := Copy(context.Background(), opt)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("a tampered image with a re-sealed map passed -sha256 of the good image: %v (%+v)", err, res)
	}
	t.Logf("refused: %v", err)
	if res == nil || res.SHA256 != sha256sum(t, img) || res.SHA256From != "stream" {
		t.Errorf("the result should carry the hash of the bytes restored (%s): %+v", sha256sum(t, img), res)
	}
	if head := gpttest.ReadAt(t, out, 0, headLen); !zeros.Is(head) {
		t.Errorf("the image's head was written despite the mismatch")
	}

	// Without -sha256 the map's claim stands in, reported as a claim only.
	opt.SHA256 = ""
	res = mustCopy(t, opt)
	if res.SHA256 != "" || res.BmapSHA256 != good || res.SHA256From != "bmap" {
		t.Errorf("without -sha256: SHA256 %q (should be empty: not hashed), BmapSHA256 %q, from %q", res.SHA256, res.BmapSHA256, res.SHA256From)
	}
}
