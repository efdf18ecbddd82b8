package gpt

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteNewFile: an undo file appears whole under its name (written
// under a temporary name, renamed into place), never replaces a file of
// that name, and leaves nothing else in the directory.
func TestWriteNewFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gptfix-undo-sda-1.json")
	data := []byte(`{"undo": 1}`)
	if err := WriteNewFile(p, data); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != string(data) {
		t.Fatalf("read back %q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	err := WriteNewFile(p, []byte("other"))
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("writing over an existing undo file: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != string(data) {
		t.Errorf("the existing undo file was replaced: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %v, want only the undo file", ents)
	}
}
