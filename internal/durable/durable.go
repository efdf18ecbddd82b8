// Package durable writes files that a crash or power cut leaves whole or
// absent: the data goes into a temporary file beside the final one, is
// fsynced, the file is renamed into place, and the directory is fsynced.
package durable

import (
	"fmt"
	"os"
)

// Commit writes data to f, a temporary file just created next to path,
// fsyncs and closes it, and renames it to path with rename (os.Rename, or
// a rename that refuses to replace path). On an error the temporary file
// is removed. The rename is on the medium once the directory is fsynced
// (SyncDir).
func Commit(f *os.File, data []byte, path string, rename func(from, to string) error) error {
	tmp := f.Name()
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// SyncDir fsyncs the directory dir, making the names created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync of %s: %w", dir, err)
	}
	return nil
}
