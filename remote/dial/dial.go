// Package dial picks the backend of a remote URL by its scheme and offers
// what imaging needs: Open (a resuming reader), Create (an upload
// committed only at its end), Stat and Remove.
package dial

import (
	"context"
	"fmt"

	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/nfs"
	"github.com/esxi-rescue/rescue/remote/s3"
	"github.com/esxi-rescue/rescue/remote/sftp"
	"github.com/esxi-rescue/rescue/remote/smb"
)

// Backend returns the backend for u.
func Backend(u *remote.URL, opt *remote.Options) (remote.Backend, error) {
	opt.Defaults()
	switch u.Scheme {
	case "sftp":
		return sftp.New(u, opt)
	case "smb":
		return smb.New(u, opt)
	case "s3":
		return s3.New(u, opt)
	case "nfs":
		return nfs.New(u, opt)
	}
	return nil, fmt.Errorf("%w: %s", remote.ErrProtocol, u)
}

func parse(rawurl string, opt *remote.Options) (*remote.URL, remote.Backend, error) {
	u, err := remote.Parse(rawurl)
	if err != nil {
		return nil, nil, err
	}
	b, err := Backend(u, opt)
	if err != nil {
		return nil, nil, err
	}
	return u, b, nil
}

// Open opens the object at rawurl for reading.
func Open(ctx context.Context, rawurl string, opt *remote.Options) (*remote.Reader, error) {
	u, b, err := parse(rawurl, opt)
	if err != nil {
		return nil, err
	}
	return remote.Open(ctx, b, u, opt)
}

// OpenRanges opens the object at rawurl for parallel ranged reads
// (remote.ErrNoRanges when its protocol or object cannot).
func OpenRanges(ctx context.Context, rawurl string, opt *remote.Options) (remote.Ranges, error) {
	u, b, err := parse(rawurl, opt)
	if err != nil {
		return nil, err
	}
	return remote.OpenRanges(ctx, b, u, opt)
}

// Create starts an upload to rawurl; an existing object is refused unless overwrite.
func Create(ctx context.Context, rawurl string, overwrite bool, opt *remote.Options) (*remote.Writer, error) {
	u, b, err := parse(rawurl, opt)
	if err != nil {
		return nil, err
	}
	return remote.Create(ctx, b, u, overwrite, opt)
}

// Stat returns the size of the object at rawurl (remote.ErrNotFound if none).
func Stat(ctx context.Context, rawurl string, opt *remote.Options) (int64, error) {
	u, b, err := parse(rawurl, opt)
	if err != nil {
		return 0, err
	}
	return remote.Stat(ctx, b, u, opt)
}

// Remove removes the object at rawurl (remote.ErrNotFound if none).
func Remove(ctx context.Context, rawurl string, opt *remote.Options) error {
	u, b, err := parse(rawurl, opt)
	if err != nil {
		return err
	}
	return remote.Remove(ctx, b, u, opt)
}
