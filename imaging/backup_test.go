package imaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/bmap"
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
			// The manifest passes the real sha256sum -c (strict, no
			// --ignore-missing) in its directory and names the raw image's hash.
			checkManifest(t, res.ManifestPath)
			m, _ := os.ReadFile(res.ManifestPath)
			if !strings.Contains(string(m), want+"  b.img\n") {
				t.Errorf("manifest lacks the raw image hash:\n%s", m)
			}
			// No temporary file is left.
			if ents, _ := os.ReadDir(bdir); len(ents) != 4 {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Errorf("the backup directory holds %v, want the image and 3 companions", names)
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

// checkManifest runs sha256sum -c --strict on a manifest in its directory.
func checkManifest(t testing.TB, manifest string) {
	t.Helper()
	c := exec.Command("sha256sum", "-c", "--strict", filepath.Base(manifest))
	c.Dir = filepath.Dir(manifest)
	if o, err := c.CombinedOutput(); err != nil {
		m, _ := os.ReadFile(manifest)
		t.Errorf("sha256sum -c %s: %v\n%s\nmanifest:\n%s", manifest, err, o, m)
	}
}

// TestBackupKilledKeepsOldSet: imgcopy -yes -compress zstd over an
// existing good backup set, killed (SIGKILL) at moments of the copy and
// failing on a read error, leaves the old image and its companions
// byte for byte (sha256sum -c passes); a backup that completes replaces
// the whole set (a companion the new one lacks is removed) and leaves
// no temporary file.
func TestBackupKilledKeepsOldSet(t *testing.T) {
	gpttest.Need(t, "sgdisk", "sha256sum")
	imgcopy := buildCmd(t, "imgcopy")
	dir := t.TempDir()
	old := sgdiskImage(t, dir, 24<<20, testParts[:2])
	bdir := t.TempDir()
	out := filepath.Join(bdir, "disk.img.zst")
	opt := copyOpts(t, old, out)
	opt.Compress = "zstd"
	mustCopy(t, opt)
	names := []string{"disk.img.zst", "disk.img.zst.sha256", "disk.img.zst.bmap", "disk.img.zst.gpt.json"}
	snapshot := func() map[string]string {
		m := map[string]string{}
		ents, _ := os.ReadDir(bdir)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(bdir, e.Name()))
			m[e.Name()] = sha256Of(b)
		}
		return m
	}
	before := snapshot()
	if len(before) != len(names) {
		t.Fatalf("fixture: the first backup wrote %v", before)
	}
	checkManifest(t, out+".sha256")

	// The new disk: incompressible, fed through stdin at our pace.
	next := make([]byte, 24<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	randomFill(rng, next)
	for i, feed := range []int{0, 1 << 20, 5 << 20, 11 << 20, 17 << 20, 23 << 20} {
		cmd := exec.Command(imgcopy, "-q", "-progress", "none", "-yes", "-compress", "zstd", "-", out)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stdin.Write(next[:feed])
		time.Sleep(20 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		stdin.Close()
		for _, n := range names {
			if got := snapshot()[n]; got != before[n] {
				t.Errorf("kill %d (after %d MiB): %s changed (or vanished)", i, feed>>20, n)
			}
		}
		checkManifest(t, out+".sha256")
	}

	// A backup failing on a read error leaves the old set too.
	faultHook = func(r io.ReaderAt) io.ReaderAt { return faultyReader{r, 1 << 20, 1<<20 + 512} }
	fopt := copyOpts(t, old, out)
	fopt.Compress, fopt.Yes = "zstd", true
	_, err := Copy(context.Background(), fopt)
	faultHook = func(r io.ReaderAt) io.ReaderAt { return r }
	if err == nil {
		t.Fatal("a backup with a read error succeeded")
	}
	for _, n := range names {
		if got := snapshot()[n]; got != before[n] {
			t.Errorf("after a failed backup: %s changed (or vanished)", n)
		}
	}

	// A complete one replaces the set; stdin has no GPT: no layout file.
	cmd := exec.Command(imgcopy, "-q", "-progress", "none", "-yes", "-compress", "zstd", "-", out)
	cmd.Stdin = bytes.NewReader(next)
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("backup: %v\n%s", err, o)
	}
	after := snapshot()
	if len(after) != 3 || after["disk.img.zst.gpt.json"] != "" || after["disk.img.zst"] == before["disk.img.zst"] {
		t.Errorf("after a complete backup the directory holds %v", after)
	}
	checkManifest(t, out+".sha256")
	res := mustCopy(t, copyOpts(t, out, filepath.Join(dir, "back")))
	if got := res.SHA256 + res.BmapSHA256; got != sha256Of(next) {
		t.Errorf("the new backup restores to %s, want %s", got, sha256Of(next))
	}
}

// TestBackupHashes: a backup's three checksums (the image's SHA-256, the
// block map's range checksums, the compressed file's SHA-256) are right
// when the image's hash is shared with its first range (a dense image, one
// range from block 0) and when it is not (the first range starts later);
// the stock zstd tool accepts and decompresses the file.
func TestBackupHashes(t *testing.T) {
	gpttest.Need(t, "zstd", "sha256sum", "cmp")
	for _, tc := range []struct {
		name       string
		size, data int64 // random bytes from data on, zeros before
		ranges     int
	}{
		{"dense", 6<<20 + 4097, 0, 1},
		{"first range later", 6<<20 + 4097, 2<<20 + 5, 1},
		{"all zeros", 3 << 20, 3 << 20, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "disk.img")
			b := make([]byte, tc.size)
			r := rand.New(rand.NewPCG(uint64(tc.size), uint64(tc.data)))
			for i := tc.data; i < tc.size; i++ {
				b[i] = byte(r.Uint32())
			}
			if err := os.WriteFile(img, b, 0o644); err != nil {
				t.Fatal(err)
			}
			want := sha256.Sum256(b)
			out := filepath.Join(dir, "bk.img.zst")
			opt := copyOpts(t, img, out)
			opt.Compress = "zstd"
			res := mustCopy(t, opt)
			if res.SHA256 != hex.EncodeToString(want[:]) {
				t.Errorf("SHA-256 %s, want %x", res.SHA256, want)
			}
			gpttest.Run(t, "zstd", "-q", "-t", out)
			if o, err := exec.Command("sh", "-c", "zstd -q -dc "+out+" | cmp - "+img).CombinedOutput(); err != nil {
				t.Errorf("zstd -dc | cmp: %v %s", err, o)
			}
			checkManifest(t, res.ManifestPath) // the compressed file's SHA-256
			m, err := bmap.ReadFile(res.BmapPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.ImageSHA256, want[:]) || len(m.Ranges) != tc.ranges {
				t.Errorf("block map: image SHA-256 %x (want %x), %d ranges (want %d)", m.ImageSHA256, want, len(m.Ranges), tc.ranges)
			}
			for _, rg := range m.Ranges {
				off, end := m.ByteRange(rg)
				if sum := sha256.Sum256(b[off:min(end, tc.size)]); !bytes.Equal(rg.Checksum, sum[:]) {
					t.Errorf("range %d-%d: checksum %x, want %x", rg.First, rg.Last, rg.Checksum, sum)
				}
			}
			back := filepath.Join(dir, "restored")
			mustCopy(t, copyOpts(t, out, back))
			cmpFiles(t, img, back, -1)
		})
	}
}
