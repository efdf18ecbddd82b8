package durable

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCommit: the data ends up under the final name and no temporary
// file is left, whether the rename succeeds or fails.
func TestCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	f, err := os.CreateTemp(dir, ".f.tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := Commit(f, []byte("whole"), path, os.Rename); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "whole" {
		t.Errorf("%s = %q, %v", path, b, err)
	}
	refused := errors.New("refused")
	f, err = os.CreateTemp(dir, ".f.tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := Commit(f, []byte("other"), path, func(string, string) error { return refused }); !errors.Is(err, refused) {
		t.Errorf("Commit with a failing rename: %v", err)
	}
	names, _ := os.ReadDir(dir)
	if len(names) != 1 || names[0].Name() != "f" {
		t.Errorf("left in the directory: %v", names)
	}
	if b, _ := os.ReadFile(path); string(b) != "whole" {
		t.Errorf("%s changed to %q", path, b)
	}
	if err := SyncDir(filepath.Join(dir, "none")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}
