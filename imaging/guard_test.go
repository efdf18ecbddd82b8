package imaging

import (
	"bytes"
	"context"
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

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/klauspost/compress/zstd"
)

// tableState is what the independent tools and our reader see on a disk.
type tableState struct {
	ours, sgdisk bool // a valid GPT (either copy) per gpt.Read / sgdisk -v
	sgdiskOut    string
}

func (s tableState) valid() bool { return s.ours || s.sgdisk }

// readState reads a disk's table with gpt.Read and sgdisk -v: sgdisk
// says "Creating new GPT entries in memory" only when it found neither
// copy (nor an MBR to convert).
func readState(t testing.TB, path string) tableState {
	t.Helper()
	var s tableState
	if tb, err := gpt.ReadFile(path, 512); err == nil && tb.Best() != nil {
		s.ours = true
	}
	s.sgdiskOut, _ = gpttest.SgdiskCheck(t, path)
	s.sgdisk = !strings.Contains(s.sgdiskOut, "Creating new GPT entries in memory")
	return s
}

// tableRegions are the byte ranges of a 512-byte-sector GPT with 128
// entries on a disk of size bytes: MBR, primary header and array, backup
// array and header.
func tableRegions(size int64) [][2]int64 {
	return [][2]int64{{0, 34 * 512}, {size - 33*512, size}}
}

// sameRegions says whether a and b hold the same bytes in every region.
func sameRegions(a, b []byte, rs [][2]int64) bool {
	for _, r := range rs {
		if !bytes.Equal(a[r[0]:r[1]], b[r[0]:r[1]]) {
			return false
		}
	}
	return true
}

// applyUndo puts the undo file back onto path with package gpt (what
// gptfix -undo does).
func applyUndo(t testing.TB, path, undo string) error {
	t.Helper()
	dev, err := gpt.OpenDevice(path, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	return gpt.ApplyUndo(dev, undo)
}

// TestFailedRestoreInvalidatesTable: a restore that fails after it began
// writing (wrong SHA-256; an image too big for the target, found only in
// the stream) leaves a disk that neither sgdisk nor gpt.Read takes for a
// valid one, says which bytes were overwritten and how to get back, and
// its undo file (through the gptfix binary) puts the old table back byte
// for byte.
func TestFailedRestoreInvalidatesTable(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	gptfix := buildCmd(t, "gptfix")
	for _, tc := range []struct {
		name  string
		image func(t *testing.T, dir string) string
		sha   string
		want  error
		blank bool // the target is all zeros: nothing to save, the image's backup header is held back
	}{
		{"blank target, checksum mismatch", func(t *testing.T, dir string) string {
			return sgdiskImage(t, dir, 64<<20, testParts)
		}, strings.Repeat("0", 64), ErrChecksum, true},
		{"checksum mismatch", func(t *testing.T, dir string) string {
			return sgdiskImage(t, dir, 64<<20, testParts)
		}, strings.Repeat("0", 64), ErrChecksum, false},
		{"too big image", func(t *testing.T, dir string) string {
			// No GPT, compressed: its size shows only in the stream.
			raw := filepath.Join(dir, "big.raw")
			makeImage(t, raw, 120<<20, 1<<20, 0.5, 9)
			fillRandom(t, raw, 119<<20, 4096, 10)
			zst := raw + ".zst"
			compressFile(t, raw, zst)
			return zst
		}, "", ErrRefused, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := tc.image(t, dir)
			var dst string
			if tc.blank {
				dst = filepath.Join(dir, "blank.img")
				if err := os.WriteFile(dst, make([]byte, 64<<20), 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				dst = sgdiskImage(t, dir, 96<<20, []gpttest.Part{{Slot: 1, First: 2048, Last: 150000, Type: "8300"}})
				fillRandom(t, dst, 4<<20, 32<<20, 77)
			}
			orig, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			p0 := gpttest.Run(t, "sgdisk", "-p", dst)
			opt := copyOpts(t, img, dst)
			opt.SHA256, opt.Yes = tc.sha, true
			opt.UndoPath = dir + "/undo.json"
			res, err := Copy(context.Background(), opt)
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, got %v", tc.want, err)
			}
			t.Logf("error (as expected): %v", err)
			if s := readState(t, dst); s.valid() {
				t.Errorf("after a failed restore the target looks valid (ours %v, sgdisk %v):\n%s", s.ours, s.sgdisk, s.sgdiskOut)
			}
			undo := dir + "/undo.before-restore.json"
			if tc.blank {
				if !strings.Contains(err.Error(), "restart the restore") || res.TableUndoPath != "" {
					t.Errorf("blank target: error %q, undo file %q", err, res.TableUndoPath)
				}
				return
			}
			for _, w := range []string{"bytes 1048576-", "were overwritten", "restart the restore", "gptfix -undo " + undo + " -yes " + dst} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not say %q", w)
				}
			}
			if res == nil || res.TableUndoPath != undo {
				t.Errorf("Result.TableUndoPath: %+v", res)
			}
			if _, err := os.Stat(opt.UndoPath); err == nil {
				t.Errorf("a GPT fix-up ran despite the failure")
			}
			// The undo file, with the gptfix command the error names.
			if out, err := exec.Command(gptfix, "-undo", undo, "-yes", dst).CombinedOutput(); err != nil {
				t.Fatalf("gptfix -undo: %v\n%s", err, out)
			}
			now, _ := os.ReadFile(dst)
			if !sameRegions(now, orig, tableRegions(int64(len(orig)))) {
				t.Errorf("gptfix -undo did not put the old table back byte for byte")
			}
			if p1 := gpttest.Run(t, "sgdisk", "-p", dst); p1 != p0 {
				t.Errorf("sgdisk -p after the undo:\n%s\nwas\n%s", p1, p0)
			}
		})
	}
}

// compressFile compresses src into dst with our zstd encoder.
func compressFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	enc, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(enc, in); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
}

// buildCmd builds ./cmds/NAME into a temporary directory.
func buildCmd(t testing.TB, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "github.com/esxi-rescue/rescue/cmds/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

// TestKilledRestoreNeverValid kills imgcopy (SIGKILL) at many moments of
// restores onto a file and onto a loop device, both holding another
// GPT and data: from before the first write to the last steps (held-back
// tables, fsync, GPT fix-up). After every kill the target is either
// untouched (old table over old data), or complete (the image), or shows
// no valid GPT to sgdisk -v and gpt.Read: never "valid and wrong". Where
// an undo file was left, it puts the old table back byte for byte.
func TestKilledRestoreNeverValid(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	imgcopy := buildCmd(t, "imgcopy")
	dir := t.TempDir()
	const imgSize = killImageSize
	_, image := killImage(t, dir)

	type target struct {
		name string
		size int64
		loop bool
	}
	targets := []target{{"file", imgSize, false}, {"loop", 48 << 20, true}}
	rng := rand.New(rand.NewPCG(16, 2))
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			if tg.loop {
				needRoot(t)
			}
			d := t.TempDir()
			back := sgdiskImage(t, d, tg.size, []gpttest.Part{{Slot: 1, First: 2048, Last: uint64(tg.size/512) - 2048, Type: "8300"}})
			fillRandom(t, back, 1<<20, int(tg.size)-(2<<20), 5)
			orig, err := os.ReadFile(back)
			if err != nil {
				t.Fatal(err)
			}
			dst := back
			if tg.loop {
				dst = gpttest.Loop(t, back)
			}
			// Kill points: after feeding k MiB of the image, and after all
			// of it with a delay (the end: tables, fsync, fix-up).
			killRestores(t, killRun{
				imgcopy: imgcopy, image: image, orig: orig,
				dst: dst, size: tg.size, dir: d,
				points: killPoints(rng, imgSize, 3, []int{0, 1, 3, 6, 10, 15, 25, 40, 70, 120}),
			})
		})
	}
}

// writeWhole writes b over the start of path (a file or device) and syncs.
func writeWhole(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Sync()
}

// readWhole reads the first n bytes of path.
func readWhole(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	_, err = io.ReadFull(f, b)
	return b, err
}

// TestKilledRestoreIntoNewFile: a restore into a new file killed midway
// leaves no DST (only DST.partial), so the rerun is not refused as "too
// small" and completes; DST.partial is gone afterwards.
func TestKilledRestoreIntoNewFile(t *testing.T) {
	imgcopy := buildCmd(t, "imgcopy")
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	makeImage(t, img, 16<<20, 64<<10, 1, 5)
	image, _ := os.ReadFile(img)
	dst := filepath.Join(dir, "new.img")
	cmd := exec.Command(imgcopy, "-q", "-progress", "none", "-", dst)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Write(image[:8<<20])
	time.Sleep(50 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(dst); err == nil {
		t.Errorf("a killed restore left %s, which a rerun takes for a too small target", dst)
	}
	res, err := Copy(context.Background(), copyOpts(t, img, dst))
	if err != nil {
		t.Fatalf("the rerun: %v", err)
	}
	cmpFiles(t, img, dst, -1)
	if _, err := os.Stat(dst + ".partial"); err == nil {
		t.Errorf("%s.partial is left after a complete restore", dst)
	}
	_ = res
}
