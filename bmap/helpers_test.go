package bmap

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/esxi-rescue/rescue/internal/zeros"
)

// sink is what Builder and Checker have in common.
type sink interface {
	Data(p []byte, off int64) error
	Zero(off, n int64) error
}

// stream feeds img to s in chunks of random odd sizes (up to maxChunk bytes),
// passing all-zero chunks (and some zero runs inside them) to Zero half of
// the time. It returns the first error.
func stream(s sink, img []byte, seed uint64, maxChunk int) error {
	r := rand.New(rand.NewPCG(seed, 7))
	for off := 0; off < len(img); {
		n := min(len(img)-off, 1+r.IntN(maxChunk))
		p := img[off : off+n]
		var err error
		if zeros.Is(p) && r.IntN(2) == 0 {
			err = s.Zero(int64(off), int64(n))
		} else {
			err = s.Data(p, int64(off))
		}
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}

// sparseImage describes a test image: size bytes, zero but for the extents.
type extent struct {
	off int64
	n   int
}

// makeImage returns an image of size bytes with pseudo-random non-zero data
// in the extents (later extents overwrite earlier ones).
func makeImage(size int64, seed uint64, extents ...extent) []byte {
	img := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for _, e := range extents {
		for i := range e.n {
			img[e.off+int64(i)] = byte(1 + r.IntN(255))
		}
	}
	return img
}

// writeSparse writes img to path as a sparse file: only its non-zero 4 KiB
// pieces are written, the rest stays a hole.
func writeSparse(t testing.TB, path string, img []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(img))); err != nil {
		t.Fatal(err)
	}
	const piece = 4096
	for off := 0; off < len(img); off += piece {
		p := img[off:min(off+piece, len(img))]
		if !zeros.Is(p) {
			if _, err := f.WriteAt(p, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// bmaptool returns the path of bmaptool, skipping the test when it is missing
// (build.sh's APT_PACKAGES installs it as bmap-tools, so CI has it).
func bmaptool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("bmaptool")
	if err != nil {
		t.Skip("bmaptool is not installed (Debian package bmap-tools; build.sh deps installs it)")
	}
	return p
}

// bmaptoolCopy runs `bmaptool copy --bmap bmapPath image out` and returns
// out's contents, or the error with bmaptool's output.
func bmaptoolCopy(t testing.TB, bmapPath, image string) ([]byte, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command(bmaptool(t), "copy", "--bmap", bmapPath, image, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bmaptool copy: %v\n%s", err, b)
	}
	return os.ReadFile(out)
}

// cmpFiles runs cmp(1) on two files and fails the test when they differ.
func cmpFiles(t testing.TB, a, b string) {
	t.Helper()
	if out, err := exec.Command("cmp", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cmp %s %s: %v\n%s", a, b, err, out)
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mapsEqual(a, b *Map) bool {
	if a.Version != b.Version || a.ImageSize != b.ImageSize || a.BlockSize != b.BlockSize ||
		a.BlocksCount != b.BlocksCount || a.ChecksumType != b.ChecksumType ||
		!bytes.Equal(a.ImageSHA256, b.ImageSHA256) || (a.ImageSHA256 == nil) != (b.ImageSHA256 == nil) ||
		len(a.Ranges) != len(b.Ranges) {
		return false
	}
	for i := range a.Ranges {
		ra, rb := a.Ranges[i], b.Ranges[i]
		if ra.First != rb.First || ra.Last != rb.Last || !bytes.Equal(ra.Checksum, rb.Checksum) ||
			(ra.Checksum == nil) != (rb.Checksum == nil) {
			return false
		}
	}
	return true
}
