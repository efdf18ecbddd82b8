package imaging

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/dial"
)

// remoteDest is a Destination on a share (smb://, nfs://, sftp://, s3://):
// the directory (or key prefix) of the image's URL. Each file is an upload
// of package remote under a temporary name (.NAME.partial; S3: a
// multipart upload), Close flushes it without publishing, Commit publishes
// the companions first and the image (the first file created) last, Abort
// discards what is not published and removes companions published by a
// Commit that failed before the image.
type remoteDest struct {
	ctx       context.Context
	u         *remote.URL // the image
	ro        *remote.Options
	files     []*remoteFile
	drops     []string
	committed bool
}

// newRemoteDest returns a Destination beside the image at u.
func newRemoteDest(ctx context.Context, u *remote.URL, ro *remote.Options) *remoteDest {
	return &remoteDest{ctx: ctx, u: u, ro: ro}
}

type remoteFile struct {
	n         int64 // bytes written
	w         *remote.Writer
	u         *remote.URL
	closed    bool
	published bool
}

func (f *remoteFile) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.n += int64(n)
	if err != nil {
		err = &writeError{err, "writing " + f.u.String() + " "}
	}
	return n, err
}

// writeError is remote.Writer's error without its leading "writing URL"
// (streamWriter says it: "writing URL: at byte N: why").
type writeError struct {
	err    error
	prefix string
}

func (e *writeError) Error() string { return strings.TrimPrefix(e.err.Error(), e.prefix) }
func (e *writeError) Unwrap() error { return e.err }

// Close sends the last bytes and makes them durable (remote.Writer.Flush).
func (f *remoteFile) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	return f.w.Flush()
}

// url names the file name beside the image.
func (d *remoteDest) url(name string) *remote.URL {
	return d.u.WithPath(path.Join(path.Dir(d.u.Path), name))
}

func (d *remoteDest) Create(name string) (DestFile, error) {
	if name == "" || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("backup: %q is not a file name", name)
	}
	u := d.url(name)
	w, err := dial.Create(d.ctx, u.Raw(), true, d.ro)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", u, err)
	}
	f := &remoteFile{w: w, u: u}
	d.files = append(d.files, f)
	return f, nil
}

func (d *remoteDest) Drop(name string) { d.drops = append(d.drops, name) }

// Commit publishes the files in reverse creation order, then removes the
// dropped names.
func (d *remoteDest) Commit() error {
	for _, f := range d.files {
		if !f.closed {
			return fmt.Errorf("backup: %s was not closed before the commit", f.u)
		}
	}
	for i := len(d.files) - 1; i >= 0; i-- {
		f := d.files[i]
		if err := f.w.Commit(); err != nil {
			return fmt.Errorf("publishing %s: %w", f.u, err)
		}
		f.published = true
	}
	d.committed = true
	for _, n := range d.drops {
		u := d.url(n)
		if err := dial.Remove(d.ctx, u.Raw(), d.ro); err != nil && !errors.Is(err, remote.ErrNotFound) {
			return fmt.Errorf("removing the stale %s: %w", u, err)
		}
	}
	return nil
}

func (d *remoteDest) Abort() {
	if d.committed {
		return
	}
	for _, f := range d.files {
		if !f.published {
			f.w.Abort()
			continue
		}
		// A companion published before the image failed: without it the
		// set cannot be taken for a complete backup of the new image.
		if err := dial.Remove(context.Background(), f.u.Raw(), d.ro); err != nil && !errors.Is(err, remote.ErrNotFound) {
			d.ro.Logf("removing %s after the failed backup: %v", f.u, err)
		}
	}
	d.files = nil
}
