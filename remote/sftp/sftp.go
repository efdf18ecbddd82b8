// Package sftp is the sftp:// (ssh://) backend of package remote: SFTP
// (github.com/pkg/sftp) over SSH (golang.org/x/crypto/ssh). The server's
// host key is checked against the URL's ?hostkey=SHA256:... fingerprint or
// a known_hosts file (the credentials' known_hosts=, ~/.ssh/known_hosts,
// /etc/ssh/ssh_known_hosts); an unknown key is refused, naming its
// fingerprint so it can be checked and given as ?hostkey=.
package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/remote"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Backend reaches one SSH server.
type Backend struct {
	u   *remote.URL
	opt *remote.Options
}

// New returns the backend of u (scheme sftp).
func New(u *remote.URL, opt *remote.Options) (*Backend, error) {
	if u.Scheme != "sftp" {
		return nil, fmt.Errorf("sftp: not an sftp URL: %s", u)
	}
	if user(u, opt) == "" {
		return nil, fmt.Errorf("%s: no user (sftp://USER@HOST/PATH or user= in the credentials file)", u)
	}
	return &Backend{u: u, opt: opt}, nil
}

func user(u *remote.URL, opt *remote.Options) string {
	if u.User != "" {
		return u.User
	}
	return opt.Cred.User
}

// hostKeyCallback checks the server's key as the package doc says.
func (b *Backend) hostKeyCallback() (ssh.HostKeyCallback, error) {
	if want := b.u.Query.Get("hostkey"); want != "" {
		if !strings.HasPrefix(want, "SHA256:") {
			return nil, fmt.Errorf("%s: ?hostkey= must be a SHA256:... fingerprint (ssh-keygen -lf KEY.pub)", b.u)
		}
		// A "+" of the base64 text arrives as a space when not escaped.
		want = strings.TrimRight(strings.ReplaceAll(want, " ", "+"), "=")
		return func(host string, _ net.Addr, key ssh.PublicKey) error {
			if got := ssh.FingerprintSHA256(key); got != want {
				return fmt.Errorf("%w: %s presented %s key %s, expected %s (?hostkey=)", remote.ErrHostKey, host, key.Type(), got, want)
			}
			return nil
		}, nil
	}
	var files []string
	cands := []string{b.opt.Cred.KnownHosts, b.u.Query.Get("known_hosts")}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, ".ssh", "known_hosts"))
	}
	cands = append(cands, "/etc/ssh/ssh_known_hosts")
	for i, f := range cands {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			if i < 2 {
				return nil, fmt.Errorf("known_hosts file: %w", err)
			}
			continue
		}
		files = append(files, f)
	}
	var kh ssh.HostKeyCallback
	if len(files) > 0 {
		var err error
		if kh, err = knownhosts.New(files...); err != nil {
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
	}
	return func(host string, addr net.Addr, key ssh.PublicKey) error {
		fp := ssh.FingerprintSHA256(key)
		if kh == nil {
			return fmt.Errorf("%w: %s presented %s key %s, which no known_hosts file lists; if that is the server's key, add ?hostkey=%s to the URL",
				remote.ErrHostKey, host, key.Type(), fp, fp)
		}
		err := kh(host, addr, key)
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			if len(ke.Want) > 0 {
				return fmt.Errorf("%w: HOST KEY MISMATCH: %s presented %s key %s, but %s:%d lists another key for it (man-in-the-middle, or the server was reinstalled)",
					remote.ErrHostKey, host, key.Type(), fp, ke.Want[0].Filename, ke.Want[0].Line)
			}
			return fmt.Errorf("%w: %s presented %s key %s, which %s does not list; if that is the server's key, add ?hostkey=%s to the URL",
				remote.ErrHostKey, host, key.Type(), fp, strings.Join(files, ", "), fp)
		}
		if err != nil {
			return fmt.Errorf("%w: %v", remote.ErrHostKey, err)
		}
		return nil
	}, nil
}

func (b *Backend) authMethods() ([]ssh.AuthMethod, error) {
	var am []ssh.AuthMethod
	c := b.opt.Cred
	if c.SSHKey != "" {
		pem, err := os.ReadFile(c.SSHKey)
		if err != nil {
			return nil, fmt.Errorf("ssh_key: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			var pp *ssh.PassphraseMissingError
			if errors.As(err, &pp) {
				return nil, fmt.Errorf("ssh_key %s is protected by a passphrase: use a key without one for the rescue system", c.SSHKey)
			}
			return nil, fmt.Errorf("ssh_key %s: %v", c.SSHKey, err)
		}
		am = append(am, ssh.PublicKeys(signer))
	}
	pw := c.Password
	if b.u.Password != "" {
		pw = b.u.Password
	}
	if pw != "" {
		am = append(am, ssh.Password(pw))
	}
	if len(am) == 0 {
		return nil, fmt.Errorf("%w: %s: no ssh_key= or password= in the credentials file", remote.ErrAuth, b.u)
	}
	return am, nil
}

// Connect implements remote.Backend.
func (b *Backend) Connect(ctx context.Context) (remote.Session, error) {
	hk, err := b.hostKeyCallback()
	if err != nil {
		return nil, err
	}
	am, err := b.authMethods()
	if err != nil {
		return nil, err
	}
	addr := b.u.Addr("22")
	conn, err := remote.DialTCP(ctx, addr, b.opt.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	// The handshake is bounded too: a server that accepts but never speaks.
	conn.SetDeadline(time.Now().Add(b.opt.ConnectTimeout))
	cfg := &ssh.ClientConfig{User: user(b.u, b.opt), Auth: am, HostKeyCallback: hk, Timeout: b.opt.ConnectTimeout}
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		if errors.Is(err, remote.ErrHostKey) {
			return nil, err
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("%w: %s: the server refused user %q with the given key/password", remote.ErrAuth, addr, cfg.User)
		}
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	client := ssh.NewClient(sc, chans, reqs)
	cl, err := sftp.NewClient(client, sftp.UseConcurrentReads(true), sftp.UseConcurrentWrites(true),
		sftp.MaxConcurrentRequestsPerFile(64), sftp.UseFstat(false))
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("%w: %s: no SFTP subsystem: %v", remote.ErrProtocol, addr, err)
	}
	conn.SetDeadline(time.Time{})
	// Keep-alives find a server that went away silently.
	stop := make(chan struct{})
	go keepAlive(client, conn, stop)
	return &session{c: cl, ssh: client, stop: stop}, nil
}

func keepAlive(c *ssh.Client, conn net.Conn, stop chan struct{}) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			done := make(chan struct{})
			go func() { c.SendRequest("keepalive@openssh.com", true, nil); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				conn.Close()
				return
			case <-stop:
				return
			}
		}
	}
}

type session struct {
	c    *sftp.Client
	ssh  *ssh.Client
	stop chan struct{}
}

func mapErr(err error) error {
	var se *sftp.StatusError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %v", remote.ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %v", remote.ErrPermission, err)
	case errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxFailure && strings.Contains(strings.ToLower(se.Error()), "space"):
		return fmt.Errorf("%w: %v", remote.ErrNoSpace, err)
	}
	return err
}

func (s *session) Size(_ context.Context, p string) (int64, error) {
	fi, err := s.c.Stat("/" + p)
	if err != nil {
		return 0, mapErr(err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("/%s is not a regular file", p)
	}
	return fi.Size(), nil
}

// streamReader reads a file from an offset on with (*sftp.File).WriteTo,
// which keeps up to MaxConcurrentRequestsPerFile read requests in flight
// all along and writes the answers in order into a pipe (bounded: the
// requests in flight, 64 x 32 KiB). Sequential ReadAt calls stall at
// the end of every buffer until all of its requests are answered: 0.76x
// of OpenSSH's sftp get on loopback (bench/remote.sh).
type streamReader struct {
	pr   *io.PipeReader
	f    *sftp.File
	done chan struct{}
}

func newStreamReader(f *sftp.File, off int64) (*streamReader, error) {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	r := &streamReader{pr: pr, f: f, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_, err := f.WriteTo(pw)
		pw.CloseWithError(mapErr(err)) // nil: io.EOF for the reader
	}()
	return r, nil
}

func (r *streamReader) Read(p []byte) (int, error) { return r.pr.Read(p) }

// Close stops WriteTo (its next write into the pipe fails), waits for it
// and closes the file. A WriteTo stuck on a dead connection holds the
// file's lock: then Close gives up after a few seconds and leaves the
// file to the session's Close, whose end of the connection ends WriteTo.
func (r *streamReader) Close() error {
	r.pr.Close()
	select {
	case <-r.done:
		return r.f.Close()
	case <-time.After(5 * time.Second):
		return nil
	}
}

func (s *session) ReadFrom(_ context.Context, p string, off int64) (io.ReadCloser, error) {
	f, err := s.c.Open("/" + p)
	if err != nil {
		return nil, mapErr(err)
	}
	r, err := newStreamReader(f, off)
	if err != nil {
		f.Close()
		return nil, mapErr(err)
	}
	return r, nil
}

func (s *session) Create(_ context.Context, p string) (remote.Upload, error) {
	return remote.RenameUpload(sfs{s}, "/"+p, func(err error) error { return s.noSpace(p, mapErr(err)) })
}

// noSpace turns a generic write failure into ErrNoSpace when the share's
// file system has no room left (OpenSSH reports ENOSPC as a plain failure).
func (s *session) noSpace(p string, err error) error {
	var se *sftp.StatusError
	if err == nil || errors.Is(err, remote.ErrNoSpace) || !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxFailure {
		return err
	}
	dir := "/" + p
	if i := strings.LastIndex(dir, "/"); i > 0 {
		dir = dir[:i]
	} else {
		dir = "/"
	}
	if vfs, verr := s.c.StatVFS(dir); verr == nil && vfs.Bavail*vfs.Frsize < 1<<20 {
		return fmt.Errorf("%w: %s has %d bytes free: %v", remote.ErrNoSpace, dir, vfs.Bavail*vfs.Frsize, err)
	}
	return err
}

func (s *session) Remove(_ context.Context, p string) error { return mapErr(s.c.Remove("/" + p)) }

type sfs struct{ s *session }

func (f sfs) CreateFile(name string) (remote.File, error) {
	file, err := f.s.c.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return nil, err
	}
	return file, nil
}

func (f sfs) Rename(o, n string) error {
	if err := f.s.c.PosixRename(o, n); err == nil {
		return nil
	}
	f.s.c.Remove(n)
	return f.s.c.Rename(o, n)
}

func (f sfs) Remove(name string) error { return f.s.c.Remove(name) }

func (s *session) Close() error {
	close(s.stop)
	s.c.Close()
	return s.ssh.Close()
}
