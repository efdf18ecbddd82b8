package qemutests

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The host-side checks must be able to fail: they are exercised here on
// tables made by sgdisk (no QEMU needed).

func sgdisk(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("sgdisk", args...).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestCheckFixedGPT(t *testing.T) {
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Fatalf("sgdisk (Debian package gdisk) is needed: %v", err)
	}
	t.Parallel()
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.img")
	if err := BlankDisk(orig, 64<<20); err != nil {
		t.Fatal(err)
	}
	// Slots 1 and 5 used, 2-4 empty, not in disk order: like ESXi.
	sgdisk(t, "-a", "1", "-n", "5:2048:+8M", "-n", "1:40960:+8M", orig)
	og, err := ReadRawGPT(orig, 512)
	if err != nil {
		t.Fatal(err)
	}
	grow := func(name string, extra ...string) string {
		p := filepath.Join(dir, name)
		if err := CopySparse(orig, p); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 96<<20); err != nil {
			t.Fatal(err)
		}
		for _, a := range extra {
			sgdisk(t, a, p)
		}
		return p
	}
	for _, tc := range []struct {
		name, path, wantErr string
	}{
		{"original", orig, ""},
		{"grown, sgdisk -e", grow("e.img", "-e"), ""},
		{"grown, backup stranded", grow("stale.img"), "AlternateLBA"},
		{"grown, sorted", grow("sorted.img", "-e", "-s"), "entry array differs"},
		{"grown, new disk GUID", grow("guid.img", "-e", "-G"), "disk GUID"},
	} {
		err := CheckFixedGPT(tc.path, 512, og.Primary)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestDigestRange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sparse := filepath.Join(dir, "sparse")
	if err := BlankDisk(sparse, 8<<20+12345); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(sparse, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("VM data"), 3<<20+7)
	f.Close()
	dense := filepath.Join(dir, "dense")
	if out, err := exec.Command("cp", "--sparse=never", sparse, dense).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	a, err := FileDigest(sparse)
	if err != nil {
		t.Fatal(err)
	}
	b, err := FileDigest(dense)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("the same bytes, sparse and dense, digest differently: %s vs %s", a, b)
	}
	f, _ = os.OpenFile(dense, os.O_RDWR, 0)
	f.WriteAt([]byte{1}, 8<<20+100) // in the short last chunk
	f.Close()
	if c, _ := FileDigest(dense); c == a {
		t.Errorf("a changed byte did not change the digest")
	}
}

// TestImageServerCut checks the test server's drop: a plain GET ends early
// with an error after CutAfter bytes, and resuming with a Range request
// gives exactly the rest.
func TestImageServerCut(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "img")
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(i * 7 / 5)
	}
	if err := os.WriteFile(file, want, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := ServeFiles(map[string]string{"/img": file})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.CutAfter = 1 << 20
	resp, err := http.Get("http://" + srv.Addr + "/img")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || int64(len(got)) != srv.CutAfter {
		t.Fatalf("plain GET: %d bytes, err %v; want a cut after %d bytes", len(got), err, srv.CutAfter)
	}
	req, _ := http.NewRequest("GET", "http://"+srv.Addr+"/img", nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", len(got)))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("Range GET: status %d, err %v", resp.StatusCode, err)
	}
	if !bytes.Equal(append(got, rest...), want) {
		t.Errorf("cut + resumed bytes differ from the file")
	}
	if srv.Cuts() != 1 || srv.RangeRequests() != 1 {
		t.Errorf("Cuts() = %d, RangeRequests() = %d, want 1 and 1", srv.Cuts(), srv.RangeRequests())
	}
}
