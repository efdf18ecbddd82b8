// Package nfs is the nfs:// backend of package remote. It uses the
// kernel's NFS client (modules nfs, nfsv3, nfsv4, sunrpc: in the rescue
// initramfs): no Go NFS client is both maintained and served by the module
// proxy, and the kernel's is the one every NAS is tested against. The
// directory of the file is mounted with mount(2) and text options (no
// mount.nfs helper needed: the kernel speaks the MOUNT protocol itself),
// "soft" with a bounded timeout so a server that goes away gives an I/O
// error instead of a hang; the files are then plain files.
//
// URL: nfs://HOST[:PORT]/EXPORT/PATH?vers=4.2|4.1|4|3 (default: 4.2, 4.1,
// 4.0 and then 3, the first that mounts).
package nfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/esxi-rescue/rescue/remote"
	"golang.org/x/sys/unix"
)

// Backend reaches one NFS server directory.
type Backend struct {
	u        *remote.URL
	opt      *remote.Options
	dir      string // exported directory holding the file, "/EXPORT/..."
	file     string // file name in dir
	versions []string
}

// New returns the backend of u (scheme nfs).
func New(u *remote.URL, opt *remote.Options) (*Backend, error) {
	dir, file := path.Split("/" + u.Path)
	if dir == "/" {
		return nil, fmt.Errorf("%s: want nfs://HOST/EXPORT/PATH", u)
	}
	b := &Backend{u: u, opt: opt, dir: strings.TrimSuffix(dir, "/"), file: file}
	switch v := u.Query.Get("vers"); v {
	case "":
		b.versions = []string{"4.2", "4.1", "4.0", "3"}
	case "3", "4", "4.0", "4.1", "4.2":
		b.versions = []string{v}
	default:
		return nil, fmt.Errorf("%s: ?vers= is 3, 4, 4.0, 4.1 or 4.2", u)
	}
	return b, nil
}

// MountOptions returns the mount(2) file system type, source and data for
// NFS version vers of the server at ip.
func (b *Backend) MountOptions(vers, ip string) (fstype, source, data string) {
	timeo := int(b.opt.ConnectTimeout / (100 * time.Millisecond)) // deciseconds
	if timeo < 10 {
		timeo = 10
	}
	host := ip
	if strings.Contains(ip, ":") {
		host = "[" + ip + "]"
	}
	source = host + ":" + b.dir
	opts := []string{"vers=" + vers, "addr=" + ip, "proto=tcp", "soft", fmt.Sprintf("timeo=%d", timeo), "retrans=2",
		"nosharecache", "rsize=1048576", "wsize=1048576"}
	if b.u.Port != "" {
		opts = append(opts, "port="+b.u.Port)
	}
	fstype = "nfs4"
	if vers == "3" {
		fstype = "nfs"
		// noacl: no NFSACL side protocol (program 100227) probe; the
		// rescue system reads and writes plain files only.
		opts = append(opts, "nolock", "noacl", "mountproto=tcp", "mountaddr="+ip)
		if p := b.u.Query.Get("mountport"); p != "" {
			opts = append(opts, "mountport="+p)
		}
	} else {
		opts = append(opts, "clientaddr=0.0.0.0")
	}
	return fstype, source, strings.Join(opts, ",")
}

// ensureModules loads the NFS client modules when the kernel lacks them.
func ensureModules() {
	fs, _ := os.ReadFile("/proc/filesystems")
	if strings.Contains(string(fs), "\tnfs4\n") && strings.Contains(string(fs), "\tnfs\n") {
		return
	}
	for _, m := range []string{"nfs", "nfsv3", "nfsv4"} {
		exec.Command("modprobe", m).Run()
	}
}

// Connect mounts the file's directory (implements remote.Backend).
func (b *Backend) Connect(ctx context.Context) (remote.Session, error) {
	ctx2, cancel := context.WithTimeout(ctx, b.opt.ConnectTimeout)
	ips, err := net.DefaultResolver.LookupIP(ctx2, "ip", b.u.Host)
	cancel()
	if err != nil || len(ips) == 0 {
		return nil, fmt.Errorf("%w: %s: %v", remote.ErrUnreachable, b.u.Host, err)
	}
	ip := ips[0].String()
	// A quick TCP probe gives "unreachable" in ConnectTimeout, not the
	// kernel's longer RPC timeouts.
	port := b.u.Port
	if port == "" {
		port = "2049"
	}
	c, err := remote.DialTCP(ctx, net.JoinHostPort(ip, port), b.opt.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	c.Close()
	ensureModules()
	mnt, err := os.MkdirTemp("", "rescue-nfs-")
	if err != nil {
		return nil, err
	}
	var errs []string
	for _, v := range b.versions {
		fstype, src, data := b.MountOptions(v, ip)
		err := unix.Mount(src, mnt, fstype, unix.MS_NOSUID|unix.MS_NODEV, data)
		if err == nil {
			return &session{b: b, mnt: mnt}, nil
		}
		errs = append(errs, fmt.Sprintf("NFS %s: %v", v, err))
		switch {
		case errors.Is(err, unix.ENODEV):
			os.Remove(mnt)
			return nil, fmt.Errorf("%w: the kernel has no NFS client (modules nfs, nfsv3, nfsv4)", remote.ErrProtocol)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			os.Remove(mnt)
			return nil, fmt.Errorf("%w: %s does not export %s to this host (%s)", remote.ErrPermission, b.u.Host, b.dir, strings.Join(errs, "; "))
		case errors.Is(err, unix.ENOENT) && len(b.versions) == 1:
			os.Remove(mnt)
			return nil, fmt.Errorf("%w: %s has no export %s (%s)", remote.ErrNotFound, b.u.Host, b.dir, strings.Join(errs, "; "))
		}
	}
	os.Remove(mnt)
	msg := strings.Join(errs, "; ")
	if strings.Contains(msg, "no such file") {
		return nil, fmt.Errorf("%w: %s has no export %s (%s)", remote.ErrNotFound, b.u.Host, b.dir, msg)
	}
	return nil, fmt.Errorf("mounting %s:%s: %s", b.u.Host, b.dir, msg)
}

type session struct {
	b   *Backend
	mnt string
}

func (s *session) local(p string) string { return filepath.Join(s.mnt, path.Base("/"+p)) }

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %v", remote.ErrNotFound, err)
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: %v", remote.ErrPermission, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %v", remote.ErrNoSpace, err)
	}
	return err
}

func (s *session) Size(_ context.Context, p string) (int64, error) {
	fi, err := os.Stat(s.local(p))
	if err != nil {
		return 0, mapErr(err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", p)
	}
	return fi.Size(), nil
}

type fileReader struct {
	f   *os.File
	off int64
}

func (r *fileReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, mapErr(err)
}

func (r *fileReader) Close() error { return r.f.Close() }

func (s *session) ReadFrom(_ context.Context, p string, off int64) (io.ReadCloser, error) {
	f, err := os.Open(s.local(p))
	if err != nil {
		return nil, mapErr(err)
	}
	return &fileReader{f: f, off: off}, nil
}

func (s *session) Create(_ context.Context, p string) (remote.Upload, error) {
	return remote.RenameUpload(osFS{}, s.local(p), mapErr)
}

func (s *session) Remove(_ context.Context, p string) error { return mapErr(os.Remove(s.local(p))) }

type osFS struct{}

func (osFS) CreateFile(name string) (remote.File, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
}
func (osFS) Rename(o, n string) error { return os.Rename(o, n) }
func (osFS) Remove(name string) error { return os.Remove(name) }

func (s *session) Close() error {
	err := unix.Unmount(s.mnt, 0)
	if err != nil {
		err = unix.Unmount(s.mnt, unix.MNT_FORCE|unix.MNT_DETACH)
	}
	os.Remove(s.mnt)
	return err
}
