package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func writeImage(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	data := writeImage(t, img, 3<<20)
	sum := sha256hex(t, img)
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"help", []string{"-h"}, 0, "", "Restore a disk image onto a disk"},
		{"no args", nil, 2, "", "Usage: imgcopy"},
		{"copy", []string{"-progress", "none", img, filepath.Join(dir, "a")}, 0, "SHA-256 " + sum, ""},
		{"delta", []string{"-delta", "-progress", "plain", img, filepath.Join(dir, "a")}, 0, "delta: read 3.0 MiB of the target, 1.9 MiB identical (skipped), 1.1 MiB written", "identical"},
		{"delta new file", []string{"-delta", img, filepath.Join(dir, "a2")}, 0, "SHA-256 " + sum, "nothing to compare: a full restore"},
		{"delta backup", []string{"-delta", "-compress", "zstd", img, filepath.Join(dir, "a3")}, 2, "", "not with -compress"},
		{"verify", []string{"-verify", img, filepath.Join(dir, "b")}, 0, "verified", ""},
		{"good sha", []string{"-sha256", sum, img, filepath.Join(dir, "c")}, 0, "SHA-256", ""},
		{"bad sha", []string{"-sha256", strings.Repeat("1", 64), img, filepath.Join(dir, "d")}, 1, "", "checksum mismatch"},
		{"missing source", []string{filepath.Join(dir, "nope"), filepath.Join(dir, "e")}, 2, "", "no such file"},
		{"bad progress", []string{"-progress", "fancy", img, filepath.Join(dir, "f")}, 2, "", "-progress"},
		{"plain progress", []string{"-progress", "plain", img, filepath.Join(dir, "g")}, 0, "", "restore: 3.0 MiB / 3.0 MiB (100%)"},
		{"bad -http-conns", []string{"-http-conns", "9", img, filepath.Join(dir, "k")}, 2, "", "-http-conns 9: want 1 to 8"},
		{"not a target", []string{img, "/dev/null"}, 2, "", "neither a regular file nor a block device"},
		{"make-bmap", []string{"-make-bmap", img}, 0, "block map " + img + ".bmap written", ""},
		{"make-bmap again", []string{"-make-bmap", img}, 2, "", "use -yes to replace it"},
		{"make-bmap args", []string{"-make-bmap", img, "x", "y"}, 2, "", "Usage: imgcopy"},
		{"copy with the map", []string{img, filepath.Join(dir, "h")}, 0, "SHA-256 " + sum + " claimed by the block map " + img + ".bmap (not hashed", "found next to the image"},
		{"map and -sha256", []string{"-sha256", sum, img, filepath.Join(dir, "j")}, 0, "SHA-256 " + sum + "\nblock map " + img + ".bmap: all 1 mapped ranges matched", ""},
		{"-no-bmap", []string{"-no-bmap", img, filepath.Join(dir, "i")}, 0, "SHA-256 " + sum + "\nthe image has no GPT", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tc.inStdout) {
				t.Errorf("stdout lacks %q: %s", tc.inStdout, out.String())
			}
			if !strings.Contains(errb.String(), tc.inStderr) {
				t.Errorf("stderr lacks %q: %s", tc.inStderr, errb.String())
			}
		})
	}
	got, _ := os.ReadFile(filepath.Join(dir, "a"))
	if !bytes.Equal(got, data) {
		t.Errorf("copy differs")
	}
}

func TestJSON(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeImage(t, img, 1<<20)
	var out, errb bytes.Buffer
	if code := run([]string{"-json", "-q", img, filepath.Join(dir, "x")}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r struct {
		Bytes  int64
		SHA256 string
		Error  string
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if r.Bytes != 1<<20 || r.SHA256 != sha256hex(t, img) || r.Error != "" {
		t.Errorf("json %+v", r)
	}

	// -delta onto the copy just made: the figures are in the JSON.
	out.Reset()
	if code := run([]string{"-json", "-q", "-delta", img, filepath.Join(dir, "x")}, &out, &errb); code != 0 {
		t.Fatalf("-delta: exit %d: %s", code, errb.String())
	}
	var d struct {
		Delta struct{ BlockSize, TargetRead, Identical, Written int64 }
	}
	if err := json.Unmarshal(out.Bytes(), &d); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	// All of the 1 MiB image is the held-back head: read, compared, written.
	if d.Delta.BlockSize != 64<<10 || d.Delta.TargetRead != 1<<20 || d.Delta.Written != 1<<20 || d.Delta.Identical != 0 {
		t.Errorf("-delta json: %+v\n%s", d.Delta, out.String())
	}
}

func TestStdinPipe(t *testing.T) {
	if _, err := exec.LookPath("gzip"); err != nil {
		t.Fatal("gzip is not installed (build.sh installs it)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeImage(t, img, 2<<20)
	gz, err := exec.Command("gzip", "-c", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	go func() { w.Write(gz); w.Close() }()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	var out, errb bytes.Buffer
	if code := run([]string{"-", filepath.Join(dir, "out")}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if sha256hex(t, filepath.Join(dir, "out")) != sha256hex(t, img) {
		t.Errorf("stdin copy differs")
	}
}

func sha256hex(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[0]
}
