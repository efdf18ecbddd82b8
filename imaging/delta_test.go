package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// deltaImage makes a 64 MiB image partitioned by sgdisk (testParts) with
// random data in every other MiB and zeros in between, and some in the
// first MiB after the GPT.
func deltaImage(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	img := sgdiskImage(t, dir, 64<<20, testParts)
	// Data in the held-back head too (after the GPT, before partition 1):
	// a delta restore must not leave it out because the target has it.
	fillRandom(t, img, 512<<10, 256<<10, 77)
	for off := int64(1 << 20); off < 50<<20; off += 2 << 20 {
		fillRandom(t, img, off, 1<<20, uint64(off))
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, b
}

// scatter changes 4 KiB in each of a fraction of the 64 KiB blocks of b
// (random blocks, random bytes at a random place in the block).
func scatter(b []byte, fraction float64, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	blocks := len(b) / deltaBlock
	for _, i := range rng.Perm(blocks)[:max(1, int(float64(blocks)*fraction))] {
		off := i*deltaBlock + rng.IntN(deltaBlock/4096)*4096
		randomFill(rng, b[off:off+4096])
	}
}

// differing counts the bytes of the 64 KiB blocks where a and b differ.
func differing(a, b []byte) int64 {
	var n int64
	for off := 0; off < min(len(a), len(b)); off += deltaBlock {
		e := min(off+deltaBlock, len(a), len(b))
		if !bytes.Equal(a[off:e], b[off:e]) {
			n += int64(e - off)
		}
	}
	return n
}

// TestDeltaRestore restores onto targets that hold the image, part of it,
// zeros or noise, of the image's size, smaller and larger, as files and
// loop devices, from a raw, a zstd and a block-mapped image. The result
// must be byte-identical (cmp) to a full restore onto the same target,
// sgdisk -v clean, and -delta must write no more than the blocks that
// differ plus the held-back head and tables. On loop devices with -verify.
func TestDeltaRestore(t *testing.T) {
	gpttest.Need(t, "sgdisk", "cmp")
	dir := t.TempDir()
	img, image := deltaImage(t, dir)
	zimg := filepath.Join(dir, "zst", "esxi.img.zst")
	os.Mkdir(filepath.Dir(zimg), 0o755)
	compressFile(t, img, zimg)
	bimg := filepath.Join(dir, "bmap", "esxi.img")
	os.Mkdir(filepath.Dir(bimg), 0o755)
	gpttest.Run(t, "cp", "--sparse=always", img, bimg)
	if _, err := MakeBmap(context.Background(), copyOpts(t, bimg, "")); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(15, 15))
	noise := func(n int) []byte { b := make([]byte, n); randomFill(rng, b); return b }
	const size = 64 << 20
	// slack is what -delta writes beyond the differing blocks: the
	// held-back head (1 MiB) and the blocks of the backup tables.
	const slack = headLen + 4*deltaBlock
	for _, tc := range []struct {
		name string
		src  string
		loop bool
		// target makes the target's content from the image's.
		target func() []byte
	}{
		{"equal", img, false, func() []byte { return bytes.Clone(image) }},
		{"1% differ", img, false, func() []byte { b := bytes.Clone(image); scatter(b, 0.01, 1); return b }},
		{"all zero", img, false, func() []byte { return make([]byte, size) }},
		{"random", img, false, func() []byte { return noise(size) }},
		{"smaller", img, false, func() []byte { b := bytes.Clone(image[:56<<20]); scatter(b, 0.01, 2); return b }},
		{"larger", img, false, func() []byte { b := append(bytes.Clone(image), noise(32<<20)...); scatter(b, 0.01, 3); return b }},
		{"zstd 1% differ", zimg, false, func() []byte { b := bytes.Clone(image); scatter(b, 0.01, 4); return b }},
		{"bmap 1% differ", bimg, false, func() []byte { b := bytes.Clone(image); scatter(b, 0.01, 5); return b }},
		{"loop equal", img, true, func() []byte { return bytes.Clone(image) }},
		{"loop 1% differ", zimg, true, func() []byte { b := bytes.Clone(image); scatter(b, 0.01, 6); return b }},
		{"loop larger", bimg, true, func() []byte { b := append(bytes.Clone(image), noise(32<<20)...); scatter(b, 0.05, 7); return b }},
		{"loop all zero", img, true, func() []byte { return make([]byte, size) }},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			if tc.loop {
				needRoot(t)
			}
			d := t.TempDir()
			before := tc.target()
			full, delta := filepath.Join(d, "full"), filepath.Join(d, "delta")
			for _, p := range []string{full, delta} {
				if err := os.WriteFile(p, before, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dfull, ddelta := full, delta
			if tc.loop {
				dfull, ddelta = gpttest.Loop(t, full), gpttest.Loop(t, delta)
			}
			opt := copyOpts(t, tc.src, dfull)
			opt.Yes, opt.UndoPath = true, filepath.Join(d, "undo-full.json")
			fres := mustCopy(t, opt)
			if fres.Delta != nil {
				t.Errorf("a full restore reports delta figures: %+v", fres.Delta)
			}
			opt.Dst, opt.Delta, opt.UndoPath = ddelta, true, filepath.Join(d, "undo-delta.json")
			// On the devices -verify reads back what -delta wrote.
			opt.Verify = tc.loop
			var plain lockedWriter
			var progress bytes.Buffer
			plain.w = &progress
			opt.Progress, opt.ProgressMode, opt.ProgressInterval = &plain, ProgressPlain, time.Hour
			res := mustCopy(t, opt)
			if res.Delta == nil {
				t.Fatal("no delta figures in the result")
			}
			if res.Verified != tc.loop {
				t.Errorf("verified %v, want %v", res.Verified, tc.loop)
			}
			if res.SHA256 != fres.SHA256 || res.SHA256From != fres.SHA256From || res.BmapSHA256 != fres.BmapSHA256 {
				t.Errorf("the checksums differ from the full restore's: %+v vs %+v", res, fres)
			}
			if tc.src == bimg && res.BmapRanges == 0 {
				t.Errorf("the block map was not used: %+v", res)
			}
			// The same bytes as a full restore (and, same size, the image).
			cmpFiles(t, full, delta, -1)
			if int64(len(before)) == size {
				cmpFiles(t, img, delta, -1)
			}
			if out, clean := gpttest.SgdiskCheck(t, ddelta); !clean {
				t.Errorf("sgdisk -v: %s", out)
			}
			after, err := os.ReadFile(delta)
			if err != nil {
				t.Fatal(err)
			}
			diff := differing(before, after)
			d0 := res.Delta
			t.Logf("target %d MiB: %d bytes differ; delta read %d, identical %d, written %d (full restore wrote %d)",
				len(before)>>20, diff, d0.TargetRead, d0.Identical, d0.Written, fres.DataBytes+fres.ZeroBytes)
			if d0.Written > diff+slack {
				t.Errorf("-delta wrote %d bytes, more than the %d that differ + %d", d0.Written, diff, slack)
			}
			if d0.TargetRead != int64(len(before)) && d0.TargetRead < min(res.Bytes, int64(len(before))) {
				t.Errorf("read %d bytes of the target, want all of what the image covers", d0.TargetRead)
			}
			if want := min(res.Bytes, int64(len(before))) - diff - slack; d0.Identical < want {
				t.Errorf("%d bytes identical, want at least %d", d0.Identical, want)
			}
			if line := progress.String(); !strings.Contains(line, "restore: ") || !strings.Contains(line, "identical") {
				t.Errorf("the progress line shows no delta figures: %q", line)
			}
		})
	}
}

// TestDeltaRefusals: -delta keeps every refusal of a full restore and
// refuses what contradicts it.
func TestDeltaRefusals(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	dir := t.TempDir()
	img, image := deltaImage(t, dir)
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, image[:40<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "old")
	if err := os.WriteFile(old, image, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*testing.T, *Options)
		want string
	}{
		{"too small", func(t *testing.T, o *Options) { o.Dst, o.Yes = small, true }, "too small"},
		{"holds a table", func(t *testing.T, o *Options) { o.Dst = old }, "use -yes"},
		{"assume-zeroed", func(t *testing.T, o *Options) { o.Dst, o.Yes, o.AssumeZeroed = old, true, true }, "not with -compress or -assume-zeroed"},
		{"refused device", func(t *testing.T, o *Options) {
			needRoot(t)
			dev := gpttest.Loop(t, old)
			o.Dst, o.Yes, o.Refuse = dev, true, []string{dev}
		}, "refuse"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			opt := copyOpts(t, img, "")
			opt.Delta = true
			tc.edit(t, &opt)
			was, err := os.ReadFile(opt.Dst)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Copy(context.Background(), opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
			t.Logf("refused as expected: %v", err)
			if now, _ := os.ReadFile(opt.Dst); !bytes.Equal(now, was) {
				t.Errorf("%s changed", opt.Dst)
			}
		})
	}
}

// TestKilledDeltaRestore kills imgcopy -delta (SIGKILL) at moments of a
// restore onto a loop device that holds an older copy of the image (1% of
// its blocks differ) under another GPT: after every kill the device is
// untouched, complete, or holds no valid GPT for sgdisk -v and gpt.Read
// (never "valid and wrong"), and the undo file puts the old table back.
func TestKilledDeltaRestore(t *testing.T) {
	needRoot(t)
	gpttest.Need(t, "sgdisk")
	imgcopy := buildCmd(t, "imgcopy")
	dir := t.TempDir()
	const imgSize = killImageSize
	_, image := killImage(t, dir)
	back := filepath.Join(dir, "disk")
	if err := os.WriteFile(back, image, 0o644); err != nil {
		t.Fatal(err)
	}
	// The old disk: another table (one partition) over the image's data, 1% changed.
	gpttest.Run(t, "sgdisk", "-Z", back)
	gpttest.Run(t, "sgdisk", "-a", "1", "-n", "1:2048:60000", back)
	orig, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	scatter(orig[1<<20:imgSize-(1<<20)], 0.01, 8)
	killRestores(t, killRun{
		imgcopy: imgcopy, image: image, orig: orig,
		dst: gpttest.Loop(t, back), size: imgSize, dir: dir,
		args:       []string{"-delta"},
		points:     killPoints(rand.New(rand.NewPCG(16, 3)), imgSize, 4, []int{0, 2, 5, 10, 20, 40, 80}),
		rerunWhole: true,
	})
}

// TestDeltaImageDirect reads an image file through the delta restore's
// O_DIRECT reader (directImage under a devReader, as directSource sets it
// up) with pipeline-sized aligned buffers, unaligned buffers and small
// ones: every read must return the file's bytes, the unaligned tail
// included. An EIO in one of the concurrent pieces must still give the
// right bytes after the devReader's sector-by-sector retry, and a delta
// restore from a failing image must name the failing LBA (faultHook
// reaches the O_DIRECT descriptor too).
func TestDeltaImageDirect(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "img")
	const size = 9<<20 + 1234
	makeImage(t, raw, size, 4096, 1, 41)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	read := func(t *testing.T, bufSize, shift int, hook func(io.ReaderAt) io.ReaderAt) []byte {
		t.Helper()
		f, err := os.Open(raw)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		src := &source{file: f, dev: &devReader{f: f, size: size, sector: 512}}
		old := faultHook
		faultHook = hook
		closeDirect := directSource(src, "none")
		faultHook = old
		if closeDirect == nil {
			t.Skip("the file system refuses O_DIRECT")
		}
		defer closeDirect()
		di := src.dev.f.(*directImage)
		defer func() {
			if shift == 0 && di.off.Load() {
				t.Error("the O_DIRECT reads were refused: the test read buffered")
			}
		}()
		var got []byte
		buf := alignedBuf(bufSize + 4096)[shift : shift+bufSize]
		for {
			n, err := io.ReadFull(src.dev, buf)
			got = append(got, buf[:n]...)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return got
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	id := func(r io.ReaderAt) io.ReaderAt { return r }
	for _, tc := range []struct {
		name         string
		bufSize, off int
	}{
		{"4MiB", 4 << 20, 0}, {"1MiB", 1 << 20, 0}, {"256KiB", 256 << 10, 0},
		{"unaligned buffer", 4 << 20, 512}, {"odd size", 3<<20 + 512, 0},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			if got := read(t, tc.bufSize, tc.off, id); !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes, not the file's %d", len(got), len(want))
			}
		})
	}
	t.Run("EIO_in_a_piece", func(t *testing.T) {
		// The fault is on the O_DIRECT descriptor only: the retries
		// (512-byte reads, buffered) read the sectors fine.
		var faults atomic.Int32
		hook := func(r io.ReaderAt) io.ReaderAt {
			return readerAtFunc(func(p []byte, off int64) (int, error) {
				n, err := faultyReader{r, 6<<20 + 1024, 6<<20 + 2048}.ReadAt(p, off)
				if errors.Is(err, syscall.EIO) {
					faults.Add(1)
				}
				return n, err
			})
		}
		if got := read(t, 4<<20, 0, hook); !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, not the file's %d", len(got), len(want))
		}
		if faults.Load() == 0 {
			t.Fatal("no read failed: the fault was not injected")
		}
	})
	t.Run("restore_names_the_LBA", func(t *testing.T) {
		dst := filepath.Join(dir, "target")
		if err := os.WriteFile(dst, want, 0o644); err != nil {
			t.Fatal(err)
		}
		old := faultHook
		faultHook = func(r io.ReaderAt) io.ReaderAt { return faultyReader{r, 5<<20 + 1024, 5<<20 + 3072} }
		defer func() { faultHook = old }()
		opt := copyOpts(t, raw, dst)
		opt.Delta, opt.Yes, opt.BufferSize = true, true, 4<<20
		_, err := Copy(context.Background(), opt)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("LBA %d", (5<<20+1024)/512)) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("want a read error naming LBA %d, got %v", (5<<20+1024)/512, err)
		}
	})
}

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }
