package imaging

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"golang.org/x/sys/unix"
)

// makeImage writes a test image of size bytes to path: every block of
// blockSize bytes holds random data with probability density (else it
// stays a hole), deterministic by seed.
func makeImage(t testing.TB, path string, size int64, blockSize int, density float64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, blockSize)
	for off := int64(0); off < size; off += int64(blockSize) {
		if rng.Float64() >= density {
			continue
		}
		n := min(int64(blockSize), size-off)
		randomFill(rng, buf[:n])
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// randomFill fills b with pseudo-random bytes, 8 at a time.
func randomFill(rng *rand.Rand, b []byte) {
	var w [8]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(b[i:], w[:])
	}
}

// fillRandom writes n random bytes at off into the file at path.
func fillRandom(t testing.TB, path string, off int64, n int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	randomFill(rng, b)
	gpttest.Patch(t, path, b, off)
}

// needRoot skips a test that needs root (loop devices, mounts).
func needRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices (/dev/loop-control missing)")
	}
}

// cmpFiles compares two files with cmp(1), optionally only the first n bytes.
func cmpFiles(t testing.TB, a, b string, n int64) {
	t.Helper()
	args := []string{a, b}
	if n >= 0 {
		args = []string{"-n", strconv.FormatInt(n, 10), a, b}
	}
	if out, err := exec.Command("cmp", args...).CombinedOutput(); err != nil {
		t.Fatalf("cmp %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// sha256sum hashes a file with sha256sum(1), an independent implementation.
func sha256sum(t testing.TB, path string) string {
	t.Helper()
	out := gpttest.Run(t, "sha256sum", path)
	return strings.Fields(out)[0]
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// allocated returns the bytes a file really occupies on disk.
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// copyOpts returns Options for a test copy with small buffers and a test log.
func copyOpts(t testing.TB, src, dst string) Options {
	return Options{Src: src, Dst: dst, BufferSize: 256 << 10, Buffers: 4,
		Log: func(f string, a ...any) { t.Logf("imaging: "+f, a...) }}
}

func mustCopy(t testing.TB, opt Options) *Result {
	t.Helper()
	res, err := Copy(context.Background(), opt)
	if err != nil {
		t.Fatalf("Copy %s -> %s: %v", opt.Src, opt.Dst, err)
	}
	return res
}

func tmp(t testing.TB, name string) string { return filepath.Join(t.TempDir(), name) }

// lockedWriter serialises writes from the progress goroutine.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestMain points TMPDIR at a directory of its own, removed at the end:
// undo files a restore writes by default (os.TempDir()) never pile up
// in /tmp, whatever a test or fuzz worker forgets to set.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "imaging-test-")
	if err != nil {
		panic(err)
	}
	// Like /tmp: the test servers (smbd, sshd as other users) reach
	// the directories the tests make in it.
	if err := os.Chmod(dir, 0o1777); err != nil {
		panic(err)
	}
	os.Setenv("TMPDIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
