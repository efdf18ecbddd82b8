// Package remote reads images from and writes backups to network shares:
// smb://, nfs://, sftp:// (ssh://) and s3:// URLs. The protocols live in
// the packages below it (remote/smb, remote/sftp, remote/s3, remote/nfs),
// each a Backend; remote/dial picks one by URL scheme. This package holds
// what they share: URL parsing, the error kinds, a Reader that resumes
// after a dropped connection from the byte reached (reconnecting with
// back-off), and the commit-by-rename Upload of file-like shares.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/remote/cred"
)

// Error kinds, tested with errors.Is. They are permanent: the Reader does
// not retry them.
var (
	ErrAuth       = errors.New("authentication failed")
	ErrNotFound   = errors.New("not found")
	ErrPermission = errors.New("permission denied")
	ErrHostKey    = errors.New("host key not trusted")
	ErrNoSpace    = errors.New("no space left on the share")
	ErrExists     = errors.New("already exists")
	ErrProtocol   = errors.New("unsupported protocol")
	// ErrUnreachable: no connection within the connect timeout (retried).
	ErrUnreachable = errors.New("host unreachable")
	// ErrChanged: the object changed on the server during the transfer
	// (another ETag, size or modification time).
	ErrChanged = errors.New("the image changed on the server")
	// ErrNoRanges: the object cannot be read in parallel ranges (no
	// validator to keep them consistent); read it as one stream.
	ErrNoRanges = errors.New("no parallel ranges")
)

// Permanent reports whether retrying cannot help.
func Permanent(err error) bool { return permanent(err) }

// permanent reports whether retrying cannot help.
func permanent(err error) bool {
	for _, e := range []error{ErrAuth, ErrNotFound, ErrPermission, ErrHostKey, ErrNoSpace, ErrExists, ErrProtocol, ErrChanged, ErrNoRanges, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Schemes lists the URL schemes of this package.
var Schemes = []string{"smb", "nfs", "sftp", "ssh", "s3"}

// IsURL reports whether s is a URL of one of Schemes.
func IsURL(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok {
		return false
	}
	scheme = strings.ToLower(scheme)
	for _, x := range Schemes {
		if scheme == x {
			return true
		}
	}
	return false
}

// URL is a parsed remote URL.
type URL struct {
	Scheme string // smb, nfs, sftp (ssh:// is sftp), s3
	// Host and Port ("" = the protocol's default); for s3:// Host is the bucket.
	Host, Port string
	// User, Domain and Password from the URL (Password only if given there,
	// which is discouraged: use a credentials file).
	User, Domain, Password string
	// Path is the path after the host, without a leading slash, unescaped.
	// For smb:// the first element is the share, for s3:// it is the key.
	Path  string
	Query url.Values
	raw   string
}

// String is the URL with any password replaced by "***".
func (u *URL) String() string { return cred.Scrub(u.raw) }

// Raw is the URL as given (with any password: never print it).
func (u *URL) Raw() string { return u.raw }

// Addr is HOST:PORT with def as the default port.
func (u *URL) Addr(def string) string {
	p := u.Port
	if p == "" {
		p = def
	}
	return net.JoinHostPort(u.Host, p)
}

// WithPath returns a copy of u naming another path (a companion file).
func (u *URL) WithPath(p string) *URL {
	c := *u
	c.Path = p
	c.raw = strings.Replace(u.raw, escapePath(u.Path), escapePath(p), 1)
	return &c
}

// Sibling returns u with suffix appended to its path (IMAGE.bmap).
func (u *URL) Sibling(suffix string) *URL { return u.WithPath(u.Path + suffix) }

func escapePath(p string) string { return (&url.URL{Path: p}).EscapedPath() }

// Parse parses a remote URL. smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH,
// nfs://HOST[:PORT]/EXPORT/PATH, sftp://USER@HOST[:PORT]/PATH (ssh://
// too), s3://BUCKET/KEY. Errors never show a password.
func Parse(s string) (*URL, error) {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			cred.AddSecret(p)
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("bad URL %s: %v", cred.Scrub(s), cred.Scrub(err.Error()))
	}
	r := &URL{Scheme: strings.ToLower(u.Scheme), Host: u.Hostname(), Port: u.Port(), Query: u.Query(), raw: s}
	if r.Scheme == "ssh" {
		r.Scheme = "sftp"
	}
	if !IsURL(s) {
		return nil, fmt.Errorf("%w: %s (want %s)", ErrProtocol, r.String(), strings.Join(Schemes, ", "))
	}
	if r.Host == "" {
		return nil, fmt.Errorf("bad URL %s: no host", r.String())
	}
	if u.User != nil {
		r.User = u.User.Username()
		r.Password, _ = u.User.Password()
		if d, usr, ok := strings.Cut(r.User, ";"); ok {
			r.Domain, r.User = d, usr
		}
	}
	r.Path = strings.TrimPrefix(u.Path, "/")
	if r.Path == "" || strings.HasSuffix(r.Path, "/") {
		return nil, fmt.Errorf("bad URL %s: no file name after the host", r.String())
	}
	if r.Port != "" {
		if n, err := strconv.Atoi(r.Port); err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("bad URL %s: bad port", r.String())
		}
	}
	return r, nil
}

// Options are shared by all backends.
type Options struct {
	// Cred holds credentials (a -cred / rescue.cred= file); may be nil.
	Cred *cred.Cred
	// ConnectTimeout bounds each connection attempt (default 10s).
	ConnectTimeout time.Duration
	// Retries is how often a failed connection is retried (default 5),
	// RetryDelay the first back-off delay (default 1s, doubled each time).
	Retries    int
	RetryDelay time.Duration
	// Conns is how many connections a parallel ranged read may use
	// (OpenRanges; SMB: sessions); 0: one.
	Conns int
	// Log receives one-line messages (retries, resumes); nil discards them.
	Log func(format string, args ...any)
}

// Defaults fills in the zero fields.
func (o *Options) Defaults() {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.Retries == 0 {
		o.Retries = 5
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Cred == nil {
		o.Cred = &cred.Cred{}
	}
}

// Logf logs through o.Log with secrets scrubbed.
func (o *Options) Logf(format string, args ...any) {
	o.Log("%s", cred.Scrub(fmt.Sprintf(format, args...)))
}

// Backend is one protocol bound to one URL's server.
type Backend interface {
	// Connect opens a session to the server (authenticated, share
	// mounted), bounded by the connect timeout.
	Connect(ctx context.Context) (Session, error)
}

// Session is a connection to a share. Paths are those of URL.Path.
type Session interface {
	// Size returns the size of the object at path (ErrNotFound if none).
	Size(ctx context.Context, path string) (int64, error)
	// ReadFrom opens the object at path for reading from byte off on.
	ReadFrom(ctx context.Context, path string, off int64) (io.ReadCloser, error)
	// Create starts writing the object at path; nothing is visible under
	// that name before Upload.Commit.
	Create(ctx context.Context, path string) (Upload, error)
	// Remove removes the object at path (ErrNotFound if none).
	Remove(ctx context.Context, path string) error
	// Close ends the session.
	Close() error
}

// Ranges reads byte ranges of one object, from several goroutines at
// once (imaging's range engine reassembles them in order).
type Ranges interface {
	// Size is the object's size when it was opened.
	Size() int64
	// ReadRange returns the bytes [off, end) of the object, after
	// checking that it is still the object opened (else an error
	// wrapping ErrChanged). ctx ends the request, body included. Errors
	// that are not Permanent may be mended by asking again (the
	// implementation reconnects as needed).
	ReadRange(ctx context.Context, off, end int64) (io.ReadCloser, error)
	// Close ends the sessions it holds.
	Close() error
}

// RangeBackend is a Backend that reads objects in parallel ranges.
type RangeBackend interface {
	// OpenRanges opens the object at path for ranged reads, bounded by
	// the connect timeout (ErrNoRanges: read it as one stream).
	OpenRanges(ctx context.Context, path string) (Ranges, error)
}

// OpenRanges opens u.Path for parallel ranged reads through b, retrying
// the connection as opt says; ErrNoRanges when b cannot (read it with
// Open instead).
func OpenRanges(ctx context.Context, b Backend, u *URL, opt *Options) (Ranges, error) {
	rb, ok := b.(RangeBackend)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoRanges, u.Scheme)
	}
	var rs Ranges
	err := Retry(ctx, u.String(), opt, func() error {
		var err error
		rs, err = rb.OpenRanges(ctx, u.Path)
		if err != nil && !errors.Is(err, ErrNoRanges) {
			return fmt.Errorf("%s: %w", u, err)
		}
		return err
	})
	return rs, err
}

// Upload is an object being written. Flush sends and makes durable every
// byte written, still under the temporary name (a file synced and closed;
// S3: the last part uploaded), so that several uploads can be flushed
// first and published together; no Write may follow it. Commit (which
// flushes first if needed) makes the object visible under its name; Abort
// (safe after Commit, a no-op then) removes what was written.
type Upload interface {
	io.Writer
	Flush() error
	Commit() error
	Abort() error
}

// DialTCP connects to addr within timeout, returning ErrUnreachable
// wrapped on failure.
func DialTCP(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, addr, err)
	}
	return c, nil
}

// Connect connects b, retrying with back-off as opt says.
func Connect(ctx context.Context, b Backend, what string, opt *Options) (Session, error) {
	var s Session
	err := Retry(ctx, what, opt, func() error {
		var err error
		s, err = b.Connect(ctx)
		return err
	})
	return s, err
}

// Retry runs fn until it succeeds, fails permanently or opt.Retries
// retries with doubling delays are used up. Errors are scrubbed.
func Retry(ctx context.Context, what string, opt *Options, fn func() error) error {
	delay := opt.RetryDelay
	var last error
	for attempt := 0; attempt <= opt.Retries; attempt++ {
		if attempt > 0 {
			opt.Logf("%s: retrying in %v (%d/%d): %v", what, delay, attempt, opt.Retries, last)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return ctx.Err()
			}
			delay *= 2
		}
		err := fn()
		if err == nil {
			return nil
		}
		if permanent(err) || ctx.Err() != nil {
			return cred.ScrubError(err)
		}
		last = err
	}
	if opt.Retries == 0 {
		return cred.ScrubError(last)
	}
	return cred.ScrubError(fmt.Errorf("%s: giving up after %d retries: %w", what, opt.Retries, last))
}

// Reader reads one object sequentially and resumes after a dropped
// connection: it reconnects (with back-off) and reopens at the byte reached.
type Reader struct {
	ctx     context.Context
	b       Backend
	opt     *Options
	u       *URL
	sess    Session
	body    io.ReadCloser
	off     int64
	size    int64
	stalls  int
	moved   bool
	Resumes int // reconnections after a dropped connection
}

// Open connects to u's server through b and opens u.Path for reading.
func Open(ctx context.Context, b Backend, u *URL, opt *Options) (*Reader, error) {
	r := &Reader{ctx: ctx, b: b, opt: opt, u: u}
	if err := r.connect(); err != nil {
		return nil, err
	}
	return r, nil
}

// Size is the object's size in bytes.
func (r *Reader) Size() int64 { return r.size }

// Offset is the number of bytes read so far.
func (r *Reader) Offset() int64 { return r.off }

func (r *Reader) connect() error {
	first := r.sess == nil && r.body == nil && r.off == 0 && r.size == 0
	return Retry(r.ctx, r.u.String(), r.opt, func() error {
		s, err := r.b.Connect(r.ctx)
		if err != nil {
			return err
		}
		size, err := s.Size(r.ctx, r.u.Path)
		if err != nil {
			s.Close()
			return fmt.Errorf("%s: %w", r.u, err)
		}
		if first {
			r.size = size
		} else if size != r.size {
			s.Close()
			return fmt.Errorf("%w: %s: cannot resume: the image size changed from %d to %d", ErrProtocol, r.u, r.size, size)
		}
		body, err := s.ReadFrom(r.ctx, r.u.Path, r.off)
		if err != nil {
			s.Close()
			return fmt.Errorf("%s: opening at byte %d: %w", r.u, r.off, err)
		}
		r.sess, r.body = s, body
		return nil
	})
}

func (r *Reader) drop() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	if r.sess != nil {
		r.sess.Close()
		r.sess = nil
	}
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if r.body == nil {
			return 0, fmt.Errorf("%s: not connected", r.u)
		}
		if rem := r.size - r.off; int64(len(p)) > rem {
			p = p[:rem]
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.moved = true
		}
		if err == nil || (err == io.EOF && r.off == r.size) {
			if n == 0 && err == nil {
				continue
			}
			return n, nil
		}
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if permanent(err) {
			return n, cred.ScrubError(fmt.Errorf("%s: at byte %d: %w", r.u, r.off, err))
		}
		// Dropped (or ended early): reconnect and resume at r.off.
		r.drop()
		r.opt.Logf("%s: connection lost at byte %d: %v", r.u, r.off, err)
		if r.moved {
			r.stalls = 0
		} else {
			r.stalls++
		}
		if r.stalls > r.opt.Retries {
			return n, cred.ScrubError(fmt.Errorf("%s: giving up after %d dropped connections in a row at byte %d: %v", r.u, r.stalls, r.off, err))
		}
		if r.stalls > 0 {
			select {
			case <-time.After(r.opt.RetryDelay << min(r.stalls-1, 6)):
			case <-r.ctx.Done():
				return n, r.ctx.Err()
			}
		}
		r.moved = false
		if cerr := r.connect(); cerr != nil {
			return n, fmt.Errorf("server gone at byte %d of %d: %w", r.off, r.size, cerr)
		}
		r.Resumes++
		r.opt.Logf("%s: resumed at byte %d", r.u, r.off)
		if n > 0 {
			return n, nil
		}
	}
}

// Close ends the session.
func (r *Reader) Close() error {
	r.drop()
	return nil
}

// Stat connects and returns the size of u.Path (ErrNotFound when absent).
func Stat(ctx context.Context, b Backend, u *URL, opt *Options) (int64, error) {
	var n int64
	err := Retry(ctx, u.String(), opt, func() error {
		s, err := b.Connect(ctx)
		if err != nil {
			return err
		}
		defer s.Close()
		if n, err = s.Size(ctx, u.Path); err != nil {
			return fmt.Errorf("%s: %w", u, err)
		}
		return nil
	})
	return n, err
}

// Remove connects and removes u.Path (ErrNotFound when absent).
func Remove(ctx context.Context, b Backend, u *URL, opt *Options) error {
	return Retry(ctx, u.String(), opt, func() error {
		s, err := b.Connect(ctx)
		if err != nil {
			return err
		}
		defer s.Close()
		if err := s.Remove(ctx, u.Path); err != nil {
			return fmt.Errorf("removing %s: %w", u, err)
		}
		return nil
	})
}

// Writer is an object being written through its own session.
type Writer struct {
	ctx  context.Context
	b    Backend
	opt  *Options
	u    *URL
	sess Session
	up   Upload
	n    int64
	done bool
}

// Create connects and starts writing u.Path. Unless overwrite, an existing
// object is refused (ErrExists).
func Create(ctx context.Context, b Backend, u *URL, overwrite bool, opt *Options) (*Writer, error) {
	s, err := Connect(ctx, b, u.String(), opt)
	if err != nil {
		return nil, err
	}
	if !overwrite {
		if n, err := s.Size(ctx, u.Path); err == nil {
			s.Close()
			return nil, fmt.Errorf("%w: %s exists (%d bytes); use -yes to overwrite it", ErrExists, u, n)
		} else if !errors.Is(err, ErrNotFound) {
			s.Close()
			return nil, cred.ScrubError(fmt.Errorf("%s: %w", u, err))
		}
	}
	up, err := s.Create(ctx, u.Path)
	if err != nil {
		s.Close()
		return nil, cred.ScrubError(fmt.Errorf("%s: %w", u, err))
	}
	return &Writer{ctx: ctx, b: b, opt: opt, u: u, sess: s, up: up}, nil
}

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.up.Write(p)
	w.n += int64(n)
	if err != nil {
		return n, cred.ScrubError(fmt.Errorf("writing %s at byte %d: %w", w.u, w.n, err))
	}
	return n, nil
}

// Flush sends every byte written and makes it durable, without
// publishing the object (Upload.Flush); Commit publishes it.
func (w *Writer) Flush() error {
	if w.done {
		return errors.New("flush after commit or abort")
	}
	if err := w.up.Flush(); err != nil {
		return cred.ScrubError(fmt.Errorf("flushing %s: %w", w.u, err))
	}
	return nil
}

// Commit makes the object visible under its name and ends the session.
func (w *Writer) Commit() error {
	if w.done {
		return nil
	}
	w.done = true
	err := w.up.Commit()
	if err != nil {
		w.up.Abort()
		err = cred.ScrubError(fmt.Errorf("finishing %s: %w", w.u, err))
	}
	w.sess.Close()
	return err
}

// Abort removes what was written and ends the session (no-op after Commit).
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	err := w.up.Abort()
	w.sess.Close()
	if ru, ok := w.up.(*renameUpload); ok && err != nil && ru.tmp != "" {
		// The session died with the transfer: a new one removes the
		// temporary file (the server may also be gone: then it stays,
		// hidden and named .partial).
		ctx, cancel := context.WithTimeout(context.Background(), 2*w.opt.ConnectTimeout)
		defer cancel()
		if s, cerr := w.b.Connect(ctx); cerr == nil {
			if rerr := s.Remove(ctx, TempName(w.u.Path)); rerr == nil || errors.Is(rerr, ErrNotFound) {
				err = nil
			}
			s.Close()
		}
	}
	if err != nil {
		err = cred.ScrubError(fmt.Errorf("removing the temporary file of %s: %w", w.u, err))
	}
	return err
}

// FS is what a file-like share offers for a commit-by-rename Upload.
type FS interface {
	// CreateFile creates (truncating) the file name for writing.
	CreateFile(name string) (File, error)
	// Rename renames a file, replacing newname if it exists.
	Rename(oldname, newname string) error
	// Remove removes a file.
	Remove(name string) error
}

// File is an open file of an FS.
type File interface {
	io.Writer
	Sync() error
	Close() error
}

// TempName is the name an upload of name is written under until Commit:
// in the same directory, hidden, with a suffix that says what it is.
func TempName(name string) string {
	dir, base := "", name
	if i := strings.LastIndexAny(name, `/\`); i >= 0 { // "\" for SMB
		dir, base = name[:i+1], name[i+1:]
	}
	return dir + "." + base + ".partial"
}

// RenameUpload writes name under TempName(name), and on Commit syncs,
// closes and renames it; Abort removes the temporary file.
func RenameUpload(fs FS, name string, mapErr func(error) error) (Upload, error) {
	tmp := TempName(name)
	f, err := fs.CreateFile(tmp)
	if err != nil {
		return nil, mapErr(fmt.Errorf("creating %s: %w", tmp, err))
	}
	return &renameUpload{fs: fs, f: f, tmp: tmp, name: name, mapErr: mapErr}, nil
}

type renameUpload struct {
	fs        FS
	f         File
	tmp, name string
	mapErr    func(error) error
	closed    bool
}

func (u *renameUpload) Write(p []byte) (int, error) {
	n, err := u.f.Write(p)
	if err != nil {
		err = u.mapErr(err)
	}
	return n, err
}

// Flush syncs and closes the temporary file.
func (u *renameUpload) Flush() error {
	if u.closed {
		return nil
	}
	if err := u.f.Sync(); err != nil {
		return u.mapErr(fmt.Errorf("flushing %s: %w", u.tmp, err))
	}
	u.closed = true
	if err := u.f.Close(); err != nil {
		return u.mapErr(fmt.Errorf("closing %s: %w", u.tmp, err))
	}
	return nil
}

func (u *renameUpload) Commit() error {
	if err := u.Flush(); err != nil {
		return err
	}
	if u.tmp == "" {
		return errors.New("commit after abort")
	}
	if err := u.fs.Rename(u.tmp, u.name); err != nil {
		return u.mapErr(fmt.Errorf("renaming %s to %s: %w", u.tmp, u.name, err))
	}
	u.tmp = ""
	return nil
}

func (u *renameUpload) Abort() error {
	if !u.closed {
		u.closed = true
		u.f.Close()
	}
	if u.tmp == "" {
		return nil
	}
	err := u.fs.Remove(u.tmp)
	if err == nil {
		u.tmp = ""
	}
	return err
}
