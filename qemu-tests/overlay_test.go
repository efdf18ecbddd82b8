package qemutests

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

// TestInitramfsWithFiles: the overlay follows the base unchanged, starts
// on a 4-byte boundary, and holds the files with their directories.
func TestInitramfsWithFiles(t *testing.T) {
	dir := t.TempDir()
	base, dst := filepath.Join(dir, "base"), filepath.Join(dir, "out")
	if err := os.WriteFile(base, []byte("abcde"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := InitramfsWithFiles(base, dst, map[string][]byte{"etc/a/ref.json": []byte("{}"), "top": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("abcde\x00\x00\x00")) {
		t.Fatalf("the base is not followed by padding to 4 bytes: %q", b[:min(len(b), 12)])
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b[8:])))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		data, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		got = append(got, r.Name+"="+string(data))
	}
	want := []string{"etc=", "etc/a=", "etc/a/ref.json={}", "top=x"}
	if len(got) != len(want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("records %q, want %q", got, want)
		}
	}
}
