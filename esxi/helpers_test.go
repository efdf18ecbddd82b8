package esxi

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// needTool returns the path of an external checker. Missing tools fail the
// test under CI (build.sh installs them) and skip it loudly elsewhere.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (Debian package %s) is missing in CI: build.sh APT_PACKAGES should install it", name, pkg)
	}
	t.Skipf("SKIPPING: %s not installed (Debian package %s); this test cross-checks with it", name, pkg)
	return ""
}

// run runs a command and returns its combined output; a non-zero exit
// fails the test unless allowFail.
func run(t *testing.T, allowFail bool, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && !allowFail {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
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

// sgdiskRow is one partition line of `sgdisk -p`.
type sgdiskRow struct {
	Num         int
	First, Last uint64
	Code        string
}

var sgdiskRowRE = regexp.MustCompile(`(?m)^\s+(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+ \S+\s+([0-9A-F]{4})`)

// sgdiskPrint parses `sgdisk -p` output.
func sgdiskPrint(t *testing.T, dev string) []sgdiskRow {
	t.Helper()
	out := run(t, false, needTool(t, "sgdisk", "gdisk"), "-p", dev)
	var rows []sgdiskRow
	for _, m := range sgdiskRowRE.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		f, _ := strconv.ParseUint(m[2], 10, 64)
		l, _ := strconv.ParseUint(m[3], 10, 64)
		rows = append(rows, sgdiskRow{n, f, l, m[4]})
	}
	return rows
}

// loopDevice attaches img read-only with the given logical sector size
// (sgdisk reads 4Kn images correctly only through a 4096-byte block device).
func loopDevice(t *testing.T, img string, sectorSize int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: attaching a 4Kn image to a loop device needs root")
	}
	losetup := needTool(t, "losetup", "util-linux")
	out, err := exec.Command(losetup, "-f", "--show", "-r", "-b", strconv.Itoa(sectorSize), img).CombinedOutput()
	if err != nil {
		t.Skipf("SKIPPING: no loop device available: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	return dev
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
