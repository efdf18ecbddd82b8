package gpttest

import (
	"crypto/rand"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Path returns where tool is: on PATH, else in /usr/sbin or /sbin, where
// Debian keeps sgdisk, fdisk and losetup but an ordinary user's PATH does
// not look; "" when it is in none of them.
func Path(tool string) string {
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	if strings.Contains(tool, "/") {
		return ""
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p, err := exec.LookPath(filepath.Join(dir, tool)); err == nil {
			return p
		}
	}
	return ""
}

// command is exec.Command with name found by Path.
func command(name string, args ...string) *exec.Cmd {
	if p := Path(name); p != "" {
		name = p
	}
	return exec.Command(name, args...)
}

// Need fails the test unless every one of tools is found by Path.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if Path(tool) == "" {
			t.Fatalf("%s is needed (build.sh APT_PACKAGES installs it): not on PATH nor in /usr/sbin, /sbin", tool)
		}
	}
}

// Run runs a command (found by Path) and returns its combined output; it
// fails the test when the command fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Sparse creates an empty sparse file of size bytes named name in dir
// and returns its path.
func Sparse(t testing.TB, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// Grow raw-copies src to a new sparse file dst of size bytes, like
// restoring the image onto a bigger disk (or a smaller one).
func Grow(t testing.TB, src, dst string, size int64) {
	t.Helper()
	Run(t, "cp", "--sparse=always", src, dst)
	if err := os.Truncate(dst, size); err != nil {
		t.Fatal(err)
	}
}

// ReadAt reads n bytes at off of path.
func ReadAt(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// WriteAt writes b at off of the open file f.
func WriteAt(t testing.TB, f *os.File, b []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Patch writes b at off of the existing file at path.
func Patch(t testing.TB, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	WriteAt(t, f, b, off)
}

// CopyRegions copies byte ranges [off, off+n) of src to the same offsets
// in dst (both exist).
func CopyRegions(t testing.TB, src, dst string, regions ...[2]int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, r := range regions {
		b := make([]byte, r[1])
		if _, err := in.ReadAt(b, r[0]); err != nil {
			t.Fatal(err)
		}
		WriteAt(t, out, b, r[0])
	}
}

// Regions are the byte ranges (offset, length) holding the GPT of an
// image of size bytes with ss-byte sectors and a 128x128 array: the MBR,
// primary header and array, and the backup array and header at the end.
func Regions(size int64, ss int) [][2]int64 {
	arr := int64(128 * 128)
	h := int64(ss)*2 + arr
	t := arr + int64(ss)
	return [][2]int64{{0, h}, {size - t, t}}
}

// Markers writes random 4 KiB blocks at the start, middle and end of each
// byte range [start, end) of path (partitions' data) and returns their
// SHA-256s by offset, for CheckMarkers.
func Markers(t testing.TB, path string, ranges ...[2]int64) map[int64][32]byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[int64][32]byte{}
	for _, r := range ranges {
		start, end := r[0], r[1]
		for _, off := range []int64{start, (start + end) / 2 / 4096 * 4096, end - 4096} {
			b := make([]byte, 4096)
			rand.Read(b)
			WriteAt(t, f, b, off)
			m[off] = sha256.Sum256(b)
		}
	}
	return m
}

// CheckMarkers fails the test (without stopping it) when any block that
// Markers wrote changed.
func CheckMarkers(t testing.TB, path string, m map[int64][32]byte) {
	t.Helper()
	for off, want := range m {
		if sha256.Sum256(ReadAt(t, path, off, 4096)) != want {
			t.Errorf("%s: partition data at byte %d changed", path, off)
		}
	}
}
