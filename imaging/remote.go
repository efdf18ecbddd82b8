package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/esxi-rescue/rescue/bmap"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/remote/dial"
)

// The hook to package remote: smb://, nfs://, sftp:// and s3:// sources,
// block maps beside them, and backup destinations.

// isRemote reports whether s is a URL of package remote.
func isRemote(s string) bool { return remote.IsURL(s) }

// remoteOptions are the remote.Options of a copy.
func (o *Options) remoteOptions() *remote.Options {
	conns, _ := o.rangeParams()
	retries := o.Retries
	if retries == 0 {
		retries = -1 // defaults() made NoRetries 0, which remote.Options takes for its default
	}
	ro := &remote.Options{Cred: o.Cred, ConnectTimeout: o.ConnectTimeout, Retries: retries, RetryDelay: o.RetryDelay, Log: o.Log, Conns: conns}
	ro.Defaults()
	return ro
}

// openRemote opens a remote image (resumed after dropped connections):
// in parallel ranges through the range engine when its protocol can
// (S3: ranged GETs over several connections; SMB: several sessions with
// READs in flight) and it is large enough, as one stream otherwise.
func openRemote(ctx context.Context, opt *Options) (*source, error) {
	if s, err := openRemoteRanges(ctx, opt); s != nil || err != nil {
		return s, err
	}
	r, err := dial.Open(ctx, opt.Src, opt.remoteOptions())
	if err != nil {
		return nil, fmt.Errorf("opening source: %w", err)
	}
	return &source{name: redact(opt.Src), r: r, size: r.Size(), closers: []func() error{r.Close}}, nil
}

// openRemoteRanges opens the image for parallel ranged reads; nil
// without an error when it is to be read as one stream.
func openRemoteRanges(ctx context.Context, opt *Options) (*source, error) {
	conns, chunk := opt.rangeParams()
	if conns == 1 {
		return nil, nil
	}
	name := redact(opt.Src)
	rs, err := dial.OpenRanges(ctx, opt.Src, opt.remoteOptions())
	switch {
	case errors.Is(err, remote.ErrNoRanges):
		if u, perr := remote.Parse(opt.Src); perr == nil && u.Scheme != "s3" && u.Scheme != "smb" {
			return nil, nil // the protocol has none: nothing to say
		}
		opt.logf("%s: one connection: %v", name, err)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("opening source: %w", err)
	}
	size := rs.Size()
	if size < 2*chunk {
		rs.Close()
		return nil, nil
	}
	open := func(ctx context.Context, off, end int64) (io.ReadCloser, error) {
		b, err := rs.ReadRange(ctx, off, end)
		if err != nil {
			err = cred.ScrubError(err)
			if !remote.Permanent(err) {
				return nil, &retryable{err}
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return remoteBody{b}, nil
	}
	r := newRangeReader(ctx, opt, name, nil, size, chunk, conns, open)
	r.closers = append(r.closers, rs.Close)
	if u, err := remote.Parse(opt.Src); err == nil && u.Scheme == "smb" {
		r.closers = append(r.closers, lowerMemoryLimit(smbMemoryLimit))
	}
	opt.logf("%s: reading %d ranges of %s at once", name, conns, gpt.HumanBytes(chunk))
	r.start(nil)
	return &source{name: name, r: r, size: size, closers: []func() error{r.Close}}, nil
}

// smbMemoryLimit is the soft memory limit while an smb:// image is read
// in ranges. go-smb2 allocates a receive buffer for every READ answer
// (up to 1 MiB); with several in flight that garbage comes fast, and the
// collector (GOGC=100) lets the heap grow to twice what is live: a
// restore from Samba on loopback peaked at 84 MiB resident, 56 MiB with
// this limit (and no slower), under the 64 MiB a restore may take.
const smbMemoryLimit = 48 << 20

// lowerMemoryLimit sets the runtime's soft memory limit to at most
// limit and returns what puts the previous one back.
func lowerMemoryLimit(limit int64) func() error {
	prev := debug.SetMemoryLimit(-1)
	if prev <= limit {
		return func() error { return nil }
	}
	debug.SetMemoryLimit(limit)
	return func() error { debug.SetMemoryLimit(prev); return nil }
}

// remoteBody is a range's body from package remote: its errors without
// secrets, and those that retrying cannot mend marked so (stopErr).
type remoteBody struct{ io.ReadCloser }

func (b remoteBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = cred.ScrubError(err)
		if remote.Permanent(err) {
			err = &stopErr{err}
		}
	}
	return n, err
}

// redact is s without passwords or signatures, for messages.
func redact(s string) string {
	if u, err := remote.Parse(s); err == nil {
		return u.String()
	}
	return s
}

// fetchRemoteBmap reads a block map from a remote URL.
func fetchRemoteBmap(ctx context.Context, opt *Options, url string) (*bmap.Map, error) {
	r, err := dial.Open(ctx, url, opt.remoteOptions())
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Size() > maxBmapFile {
		return nil, fmt.Errorf("%s: larger than %s, not a block map", redact(url), gpt.HumanBytes(maxBmapFile))
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	m, err := bmap.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redact(url), err)
	}
	return m, nil
}

// remoteBmapBeside looks for IMAGE.bmap (and the names bmapCandidates
// gives) beside a remote image; nil when there is none.
func remoteBmapBeside(ctx context.Context, opt *Options) (*bmap.Map, string, error) {
	u, err := remote.Parse(opt.Src)
	if err != nil {
		return nil, "", err
	}
	ro := opt.remoteOptions()
	ro.Retries = 0 // the image itself was just reached
	for _, p := range bmapCandidates(u.Path) {
		cu := u.WithPath(p)
		b, err := dial.Backend(cu, ro)
		if err != nil {
			return nil, "", err
		}
		if _, err := remote.Stat(ctx, b, cu, ro); errors.Is(err, remote.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, "", fmt.Errorf("the image's block map %s: %w (use -no-bmap to restore without it)", cu, err)
		}
		m, err := fetchRemoteBmap(ctx, opt, cu.Raw())
		if err != nil {
			return nil, "", fmt.Errorf("the image's block map: %w (use -no-bmap to restore without it)", err)
		}
		return m, cu.String(), nil
	}
	return nil, "", nil
}
