package gpt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/esxi-rescue/rescue/internal/durable"
	"golang.org/x/sys/unix"
)

// Disk is what plans and undo files are written through: a Device's
// file in real use, or any wrapper around one (tests inject faults that
// way). Sync must make everything written so far durable.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// readAt reads exactly len(b) bytes at off.
func readAt(d Disk, b []byte, off int64) error {
	n, err := d.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// writeSector writes one sector and checks that all of it went out.
func writeSector(d Disk, w Write) error {
	n, err := d.WriteAt(w.New, w.Offset)
	if err == nil && n != len(w.New) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("gpt: writing the %s at LBA %d: %w", w.Region, w.LBA, err)
	}
	return nil
}

// syncDev flushes d, naming what was just written.
func syncDev(d Disk, what string) error {
	if err := d.Sync(); err != nil {
		return fmt.Errorf("gpt: flushing the %s to the disk: %w", what, err)
	}
	return nil
}

// verifySectors re-reads every write and compares it with want(w).
func verifySectors(d Disk, ws []Write, want func(Write) []byte) error {
	var bad []string
	for _, w := range ws {
		got := make([]byte, len(w.New))
		if err := readAt(d, got, w.Offset); err != nil {
			return fmt.Errorf("gpt: re-reading the %s at LBA %d: %w", w.Region, w.LBA, err)
		}
		if !bytes.Equal(got, want(w)) {
			bad = append(bad, fmt.Sprintf("%s LBA %d", w.Region, w.LBA))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("gpt: verification failed: %d sector(s) read back differ from what was written: %v", len(bad), limitList(bad, 8))
	}
	return nil
}

// WriteNewFile creates path (which must not exist yet) with data and
// makes it durable: the file and its directory are fsynced. The data is
// written under a temporary name in the same directory and renamed to
// path only once it is whole and on the medium, without replacing a file
// of that name: a run killed (or a power cut) while an undo file is being
// written leaves no empty or half undo file under its name, only the
// temporary one (the disk is written only after this returns). Undo
// files are written this way, gpt's own and imaging's.
func WriteNewFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	if err := durable.Commit(f, data, path, renameNoReplace); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}

// renameNoReplace renames from to to, failing (fs.ErrExist) when to
// exists: renameat2(RENAME_NOREPLACE), or on a filesystem without it a
// hard link (which fails on an existing name too) and, where links are
// not possible either, a check before a plain rename.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	if err := os.Link(from, to); err == nil {
		return os.Remove(from)
	} else if errors.Is(err, fs.ErrExist) {
		return err
	}
	if _, err := os.Lstat(to); err == nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: fs.ErrExist}
	}
	return os.Rename(from, to)
}
