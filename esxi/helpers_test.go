package esxi

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// needTool returns the path of an external checker (gpttest.Path: PATH,
// /usr/sbin, /sbin). Missing tools fail the test under CI (build.sh
// installs them) and skip it loudly elsewhere.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	if p := gpttest.Path(name); p != "" {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (Debian package %s) is missing in CI: build.sh APT_PACKAGES should install it", name, pkg)
	}
	t.Skipf("SKIPPING: %s not installed (Debian package %s); this test cross-checks with it", name, pkg)
	return ""
}

// createImage builds an image in a temp dir.
func createImage(t *testing.T, opt CreateOptions) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "esxi.img")
	if err := Create(p, opt); err != nil {
		t.Fatalf("Create(%+v): %v", opt, err)
	}
	return p
}

// extract copies bytes [off, off+n) of img into a new sparse file.
func extract(t *testing.T, img string, off, n int64) string {
	t.Helper()
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p := filepath.Join(t.TempDir(), "part.img")
	dst, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Truncate(n); err != nil {
		t.Fatal(err)
	}
	if err := copyRange(dst, src, off, 0, n); err != nil {
		t.Fatal(err)
	}
	return p
}

// loopDevice attaches img read-only with the given logical sector size
// (sgdisk reads 4Kn images correctly only through a 4096-byte block
// device); the test skips when that needs root or no loop device is free.
func loopDevice(t *testing.T, img string, sectorSize int) string {
	t.Helper()
	needTool(t, "losetup", "util-linux")
	return gpttest.Loop(t, img, "-r", "-b", strconv.Itoa(sectorSize))
}

// sameSparse reports whether two files have identical bytes, reading only
// where either has data.
func sameSparse(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	sa, _ := fa.Stat()
	sb, _ := fb.Stat()
	if sa.Size() != sb.Size() {
		return false
	}
	ea, err := dataExtents(fa, sa.Size())
	if err != nil {
		t.Fatal(err)
	}
	eb, err := dataExtents(fb, sb.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range append(ea, eb...) {
		x, y := make([]byte, e.Len), make([]byte, e.Len)
		fa.ReadAt(x, e.Off)
		fb.ReadAt(y, e.Off)
		if !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

// execCommand is exec.Command (a seam for readability in table tests).
func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
