// Package smb is the smb:// backend of package remote: SMB 2 and 3
// (github.com/cloudsoda/go-smb2, the maintained fork of hirochachacha's
// go-smb2) with NTLM authentication. Signing is used when the server asks
// for it, encryption when the share requires it (SMB 3). SMB1 is refused.
//
// URL: smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH; user=, password= and
// domain= may come from the credentials file instead.
package smb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudsoda/go-smb2"
	"github.com/esxi-rescue/rescue/remote"
)

// NTSTATUS codes mapped to remote's error kinds.
const (
	statusLogonFailure      = 0xC000006D
	statusWrongPassword     = 0xC000006A
	statusAccountDisabled   = 0xC0000072
	statusAccountRestrict   = 0xC000006E
	statusPasswordExpired   = 0xC0000071
	statusAccessDenied      = 0xC0000022
	statusBadNetworkName    = 0xC00000CC
	statusObjectNotFound    = 0xC0000034
	statusPathNotFound      = 0xC000003A
	statusNoSuchFile        = 0xC000000F
	statusDiskFull          = 0xC000007F
	statusQuotaExceeded     = 0xC0000044
	statusObjectNameInvalid = 0xC0000033
	statusNotSupported      = 0xC00000BB
)

// Backend reaches one SMB server and share.
type Backend struct {
	u                      *remote.URL
	opt                    *remote.Options
	share, path            string
	user, password, domain string
}

// New returns the backend of u (scheme smb).
func New(u *remote.URL, opt *remote.Options) (*Backend, error) {
	share, p, ok := strings.Cut(u.Path, "/")
	if !ok || share == "" || p == "" {
		return nil, fmt.Errorf("%s: want smb://[DOMAIN;]USER@HOST/SHARE/PATH", u)
	}
	b := &Backend{u: u, opt: opt, share: share, path: p,
		user: u.User, password: u.Password, domain: u.Domain}
	if b.user == "" {
		b.user = opt.Cred.User
	}
	if b.password == "" {
		b.password = opt.Cred.Password
	}
	if b.domain == "" {
		b.domain = opt.Cred.Domain
	}
	return b, nil
}

// Connect implements remote.Backend.
func (b *Backend) Connect(ctx context.Context) (remote.Session, error) {
	addr := b.u.Addr("445")
	conn, err := remote.DialTCP(ctx, addr, b.opt.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(b.opt.ConnectTimeout))
	d := &smb2.Dialer{Initiator: &smb2.NTLMInitiator{User: b.user, Password: b.password, Domain: b.domain}}
	s, err := d.DialConn(ctx, conn, b.u.Host)
	if err != nil {
		conn.Close()
		return nil, b.mapErr(err, "session setup")
	}
	fs, err := s.Mount(b.share)
	if err != nil {
		s.Logoff()
		conn.Close()
		return nil, b.mapErr(err, "share "+b.share)
	}
	conn.SetDeadline(time.Time{})
	return &session{b: b, s: s, fs: fs, conn: conn}, nil
}

// mapErr turns go-smb2's errors into remote's kinds with a clear text.
func (b *Backend) mapErr(err error, what string) error {
	if err == nil {
		return nil
	}
	var re *smb2.ResponseError
	if errors.As(err, &re) {
		switch re.Code {
		case statusLogonFailure, statusWrongPassword:
			return fmt.Errorf("%w: %s: the server refused user %q (wrong user or password)", remote.ErrAuth, b.u.Host, b.user)
		case statusAccountDisabled, statusAccountRestrict, statusPasswordExpired:
			return fmt.Errorf("%w: %s: account %q cannot log on: %v", remote.ErrAuth, b.u.Host, b.user, err)
		case statusBadNetworkName:
			return fmt.Errorf("%w: %s has no share %q", remote.ErrNotFound, b.u.Host, b.share)
		case statusObjectNotFound, statusPathNotFound, statusNoSuchFile, statusObjectNameInvalid:
			return fmt.Errorf("%w: %s: %v", remote.ErrNotFound, what, err)
		case statusAccessDenied:
			return fmt.Errorf("%w: %s: %v", remote.ErrPermission, what, err)
		case statusDiskFull, statusQuotaExceeded:
			return fmt.Errorf("%w: %s: %v", remote.ErrNoSpace, what, err)
		}
		return fmt.Errorf("smb %s: %v", what, err)
	}
	var ie *smb2.InvalidResponseError
	var te *smb2.TransportError
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s: %v", remote.ErrNotFound, what, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %s: %v", remote.ErrPermission, what, err)
	case errors.As(err, &ie) && what == "session setup", strings.Contains(err.Error(), "dialect"):
		return fmt.Errorf("%w: %s did not negotiate SMB 2 or 3 (%v): SMB1 is refused; enable SMB2/3 on the server (Samba: server min protocol = SMB2)", remote.ErrProtocol, b.u.Host, err)
	case errors.As(err, &te) && what == "session setup" && errors.Is(te.Err, io.EOF):
		return fmt.Errorf("%w: %s closed the connection during SMB 2/3 negotiation (a server that speaks only SMB1 does this; SMB1 is refused): %v", remote.ErrProtocol, b.u.Host, err)
	}
	return fmt.Errorf("smb %s: %v", what, err)
}

type session struct {
	b    *Backend
	s    *smb2.Session
	fs   *smb2.Share
	conn net.Conn
}

func (s *session) smbPath(p string) string {
	// URL paths are SHARE/PATH; the backend's path is relative to the share.
	if share, rest, ok := strings.Cut(p, "/"); ok && share == s.b.share {
		p = rest
	}
	return strings.ReplaceAll(p, "/", `\`)
}

func (s *session) Size(_ context.Context, p string) (int64, error) {
	fi, err := s.fs.Stat(s.smbPath(p))
	if err != nil {
		return 0, s.b.mapErr(err, p)
	}
	if fi.IsDir() {
		return 0, fmt.Errorf("%s is a directory", p)
	}
	return fi.Size(), nil
}

type offReader struct {
	f   *smb2.File
	off int64
	s   *session
	p   string
}

func (r *offReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	if err != nil && err != io.EOF {
		err = r.s.b.mapErr(err, r.p)
	}
	return n, err
}

func (r *offReader) Close() error { return r.f.Close() }

func (s *session) ReadFrom(_ context.Context, p string, off int64) (io.ReadCloser, error) {
	f, err := s.fs.Open(s.smbPath(p))
	if err != nil {
		return nil, s.b.mapErr(err, p)
	}
	return &offReader{f: f, off: off, s: s, p: p}, nil
}

func (s *session) Create(_ context.Context, p string) (remote.Upload, error) {
	return remote.RenameUpload(sfs{s}, s.smbPath(p), func(err error) error { return s.b.mapErr(err, p) })
}

func (s *session) Remove(_ context.Context, p string) error {
	return s.b.mapErr(s.fs.Remove(s.smbPath(p)), p)
}

type sfs struct{ s *session }

func (f sfs) CreateFile(name string) (remote.File, error) {
	file, err := f.s.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return file, nil
}

func (f sfs) Rename(o, n string) error {
	if _, err := f.s.fs.Stat(n); err == nil {
		if err := f.s.fs.Remove(n); err != nil {
			return err
		}
	}
	return f.s.fs.Rename(o, n)
}

func (f sfs) Remove(name string) error { return f.s.fs.Remove(name) }

func (s *session) Close() error {
	s.fs.Umount()
	s.s.Logoff()
	return s.conn.Close()
}

// OpenRanges implements remote.RangeBackend: Options.Conns sessions
// (TCP connections, each with its own window, as SMB 3 multichannel
// would have), each with the file open, the ranges dealt out to them in
// turn; ReadAt may be called from several goroutines at once, so that
// several READ requests are in flight (go-smb2 sends each with its
// credits and matches the answers by message id; a range is read in
// requests of up to 1 MiB). After each range the file's size and
// modification time are checked to be those it had when opened (a write
// to it fails the download: the bytes handed out were all read before
// it). When a connection breaks, the next range on it reconnects and
// checks the same.
func (b *Backend) OpenRanges(ctx context.Context, p string) (remote.Ranges, error) {
	r := &ranges{b: b, p: p}
	for range max(b.opt.Conns, 1) {
		r.slots = append(r.slots, &slot{r: r})
	}
	if _, _, err := r.slots[0].file(ctx); err != nil {
		return nil, err
	}
	r.opened = true
	return r, nil
}

type ranges struct {
	b      *Backend
	p      string
	size   int64
	mod    time.Time
	opened bool // size and mod are known
	slots  []*slot
	next   atomic.Uint32
}

// slot is one session with the file open.
type slot struct {
	r      *ranges
	mu     sync.Mutex
	s      *session
	f      *smb2.File
	gen    int  // connections made
	broken bool // the current one failed
}

func (r *ranges) Size() int64 { return r.size }

// file returns the slot's open file (and its connection's generation),
// connecting when it has none or the last connection failed.
func (sl *slot) file(ctx context.Context) (*smb2.File, int, error) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.f != nil && !sl.broken {
		return sl.f, sl.gen, nil
	}
	sl.drop()
	r := sl.r
	sess, err := r.b.Connect(ctx)
	if err != nil {
		return nil, 0, err
	}
	s := sess.(*session)
	f, err := s.fs.Open(s.smbPath(r.p))
	if err != nil {
		s.Close()
		return nil, 0, s.b.mapErr(err, r.p)
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = fmt.Errorf("%s is a directory", r.p)
	}
	if err != nil {
		f.Close()
		s.Close()
		return nil, 0, s.b.mapErr(err, r.p)
	}
	if !r.opened {
		r.size, r.mod = fi.Size(), fi.ModTime()
	} else if err := r.check(f); err != nil {
		f.Close()
		s.Close()
		return nil, 0, err
	}
	sl.s, sl.f, sl.broken = s, f, false
	sl.gen++
	return f, sl.gen, nil
}

// check returns ErrChanged when the file's size or modification time
// are no longer those it had when opened.
func (r *ranges) check(f *smb2.File) error {
	fi, err := f.Stat()
	if err != nil {
		return r.b.mapErr(err, r.p)
	}
	if fi.Size() != r.size || !fi.ModTime().Equal(r.mod) {
		return fmt.Errorf("%w: %s: size %d, modified %v; was %d, %v", remote.ErrChanged, r.p, fi.Size(), fi.ModTime(), r.size, r.mod)
	}
	return nil
}

// fail marks connection gen of the slot as broken (the next range on
// it reconnects).
func (sl *slot) fail(gen int) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if gen == sl.gen && sl.s != nil && !sl.broken {
		sl.broken = true
		sl.s.conn.Close() // every read in flight on it ends now
	}
}

// drop ends the slot's session. A broken one only loses its TCP
// connection (closed already by fail): reads of other ranges may still
// be waiting on it, and go-smb2 hands them an empty answer instead of an
// error when the session is logged off under them.
func (sl *slot) drop() {
	switch {
	case sl.s == nil:
	case sl.broken:
		sl.s.conn.Close()
	default:
		sl.f.Close()
		sl.s.Close()
	}
	sl.s, sl.f = nil, nil
}

func (r *ranges) Close() error {
	for _, sl := range r.slots {
		sl.mu.Lock()
		sl.drop()
		sl.mu.Unlock()
	}
	return nil
}

func (r *ranges) ReadRange(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	sl := r.slots[int(r.next.Add(1)-1)%len(r.slots)]
	f, gen, err := sl.file(ctx)
	if err != nil {
		return nil, err
	}
	b := &rangeBody{r: r, sl: sl, f: f, gen: gen, off: off, end: end}
	// go-smb2 reads take no context: ending the request (a stalled
	// server, the download cancelled) ends the connection.
	b.stop = context.AfterFunc(ctx, func() { sl.fail(gen) })
	return b, nil
}

// rangeBody reads [off, end) of the file with ReadAt.
type rangeBody struct {
	r        *ranges
	sl       *slot
	f        *smb2.File
	gen      int
	off, end int64
	stop     func() bool
}

func (b *rangeBody) Read(p []byte) (int, error) {
	if b.off >= b.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), b.end-b.off)]
	n, err := b.f.ReadAt(p, b.off)
	b.off += int64(n)
	switch {
	case (err == nil || err == io.EOF) && b.off == b.end:
		// The range is read: the file must still be the one opened
		// (a write to it since would have changed its modification
		// time), so that the bytes handed out are all the image's.
		if err := b.r.check(b.f); err != nil {
			return n, err
		}
		return n, nil
	case err == nil:
		return n, nil
	case err == io.EOF:
		return n, fmt.Errorf("%w: %s ends at byte %d, was %d bytes long", remote.ErrChanged, b.r.p, b.off, b.r.size)
	}
	b.sl.fail(b.gen)
	return n, b.r.b.mapErr(err, b.r.p)
}

func (b *rangeBody) Close() error {
	b.stop()
	return nil
}
