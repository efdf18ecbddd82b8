package imaging

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Destination receives the files of one backup (the image and its
// companions: .gpt.json, .bmap, .sha256, signatures) all or nothing:
//
//   - Create starts a file under a temporary name that the final name's
//     readers never see (a local directory: a hidden file in the same
//     directory; a share or bucket: whatever its atomic publish needs);
//   - writes go to the returned DestFile; Close makes them durable;
//   - Commit publishes every file under its final name, replacing what
//     was there, companions first and the image last, and removes the
//     names passed to Drop (companions the new backup does not have); it
//     then makes the publication durable (a directory fsync);
//   - Abort discards every file created and leaves the final names as
//     they were. A crash before Commit leaves the old backup set intact
//     (plus temporaries a later Abort or cleanup can remove).
//
// Names are base names inside the destination ("esxi.img.zst",
// "esxi.img.zst.sha256"). The local implementation is a directory
// (newDirDest); package remote's destinations (SMB, NFS, SFTP, S3)
// implement the same contract.
type Destination interface {
	// Create starts the file that Commit publishes as name.
	Create(name string) (DestFile, error)
	// Drop marks name to be removed by Commit.
	Drop(name string)
	// Commit publishes every created file (each must be closed).
	Commit() error
	// Abort discards every created file; it is a no-op after Commit.
	Abort()
}

// DestFile is one file being written to a Destination: sequential Writes,
// then Close, which makes the bytes durable (fsync) before Commit.
type DestFile interface {
	io.Writer
	Close() error
}

// osFiler is implemented by DestFiles backed by a local file: a raw
// (uncompressed) backup then writes at offsets and leaves holes for zeros.
type osFiler interface {
	File() *os.File
}

// dirDest is a Destination in a local directory.
type dirDest struct {
	dir       string
	files     []*dirFile
	drops     []string
	committed bool
}

// newDirDest returns a Destination writing into dir.
func newDirDest(dir string) *dirDest { return &dirDest{dir: dir} }

type dirFile struct {
	f      *os.File
	name   string // final base name
	tmp    string // temporary path
	closed bool
}

func (f *dirFile) Write(p []byte) (int, error) { return f.f.Write(p) }
func (f *dirFile) File() *os.File              { return f.f }

// Close fsyncs and closes the temporary file.
func (f *dirFile) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	if err := f.f.Sync(); err != nil {
		f.f.Close()
		return fmt.Errorf("flushing %s: %w", f.tmp, err)
	}
	return f.f.Close()
}

func (d *dirDest) Create(name string) (DestFile, error) {
	if name == "" || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("backup: %q is not a file name", name)
	}
	f, err := os.CreateTemp(d.dir, "."+name+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("creating a temporary file for %s: %w", filepath.Join(d.dir, name), err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	// Locked while being written: clean tells a killed backup's
	// temporary (lock gone with its process) from a running one's.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	df := &dirFile{f: f, name: name, tmp: f.Name()}
	d.files = append(d.files, df)
	return df, nil
}

func (d *dirDest) Drop(name string) { d.drops = append(d.drops, name) }

// clean removes the temporaries a killed backup of base (and its
// companions) left behind: ".BASE*.tmp-*" files no process holds locked.
// It returns their names.
func (d *dirDest) clean(base string) []string {
	matches, _ := filepath.Glob(filepath.Join(d.dir, "."+globEscape(base)+"*.tmp-*"))
	var removed []string
	for _, m := range matches {
		f, err := os.Open(m)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() ||
			unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close()
			continue
		}
		if os.Remove(m) == nil {
			removed = append(removed, m)
		}
		f.Close()
	}
	return removed
}

// globEscape quotes the characters filepath.Match treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Commit renames the files in reverse creation order (the image, created
// first, is published last), removes the dropped names and fsyncs the
// directory.
func (d *dirDest) Commit() error {
	for _, f := range d.files {
		if !f.closed {
			return fmt.Errorf("backup: %s was not closed before the commit", f.name)
		}
	}
	for i := len(d.files) - 1; i >= 0; i-- {
		f := d.files[i]
		if err := os.Rename(f.tmp, filepath.Join(d.dir, f.name)); err != nil {
			return fmt.Errorf("publishing %s: %w", filepath.Join(d.dir, f.name), err)
		}
		f.tmp = ""
	}
	d.committed = true
	for _, n := range d.drops {
		if err := os.Remove(filepath.Join(d.dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the stale %s: %w", filepath.Join(d.dir, n), err)
		}
	}
	if err := syncDir(d.dir); err != nil {
		return fmt.Errorf("flushing the directory %s: %w", d.dir, err)
	}
	return nil
}

func (d *dirDest) Abort() {
	if d.committed {
		return
	}
	for _, f := range d.files {
		if !f.closed {
			f.closed = true
			f.f.Close()
		}
		if f.tmp != "" {
			os.Remove(f.tmp)
		}
	}
	d.files = nil
}
