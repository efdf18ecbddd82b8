package gpt

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// writeFileSync creates path (which must not exist yet) with data and
// makes it durable: the file and its directory are fsynced.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}
