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
	"os"
	"strings"
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
	conn interface{ Close() error }
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
