package imaging

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/dial"
)

// Backups to a share URL: backupTo writes through openRemoteDest's
// Destination (remote_dest.go) instead of a local directory's, and
// verifies by reading the published image back.

// openRemoteDest checks a share destination and returns its Destination:
// an existing image is refused without -yes (before the source is read).
func openRemoteDest(ctx context.Context, opt *Options) (*remoteDest, error) {
	u, err := remote.Parse(opt.Dst)
	if err != nil {
		return nil, err
	}
	ro := opt.remoteOptions()
	if n, err := dial.Stat(ctx, opt.Dst, ro); err == nil && !opt.Yes {
		return nil, refused("%s exists (%s); use -yes to overwrite it", u, gpt.HumanBytes(n))
	} else if err != nil && !errors.Is(err, remote.ErrNotFound) {
		return nil, fmt.Errorf("backup target: %w", err)
	}
	return newRemoteDest(ctx, u, ro), nil
}

// base is the image's file name.
func (d *remoteDest) base() string { return path.Base(d.u.Path) }

// beside is the URL (without secrets) of name beside the image.
func (d *remoteDest) beside(name string) string { return d.url(name).String() }

// verifyRemoteImage reads a backup back from the share, decompressing it,
// and checks the uncompressed stream's SHA-256.
func verifyRemoteImage(ctx context.Context, opt *Options, want []byte) error {
	r, err := dial.Open(ctx, opt.Dst, opt.remoteOptions())
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer r.Close()
	d, _, closeDec, err := decompress(r)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer closeDec()
	opt.logf("verifying: reading back %s", redact(opt.Dst))
	var h hash.Hash = sha256.New()
	if _, err := io.Copy(h, d); err != nil {
		return fmt.Errorf("verify: reading back %s: %w", redact(opt.Dst), err)
	}
	if got := h.Sum(nil); string(got) != string(want) {
		return fmt.Errorf("%w: %s decompresses to SHA-256 %x, written %x", ErrVerify, redact(opt.Dst), got, want)
	}
	return nil
}
