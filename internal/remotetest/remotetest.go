// Package remotetest starts real servers for the tests of package remote
// and its users: OpenSSH's sshd, Samba's smbd and an S3 server
// (versitygw), each with its own configuration in a temporary directory,
// bound to a loopback port, stopped when the test ends. A missing server
// binary skips the test outside CI and fails it under CI=true (CI installs
// them: build.sh APT_PACKAGES). Cut is a loopback TCP proxy that drops the
// connection once after a number of bytes, for resume tests.
package remotetest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Need returns the path of a server binary, skipping the test when it is
// missing (failing under CI, where build.sh installs it).
func Need(t testing.TB, bin, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		dirs := []string{"/usr/sbin", "/sbin", "/usr/local/bin", os.ExpandEnv("$HOME/go/bin")}
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			dirs = append(dirs, filepath.Join(strings.TrimSpace(string(out)), "bin"))
		}
		for _, dir := range dirs {
			if _, serr := os.Stat(filepath.Join(dir, bin)); serr == nil {
				return filepath.Join(dir, bin)
			}
		}
		msg := fmt.Sprintf("%s not installed (%s; build.sh installs it)", bin, pkg)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// FreePort returns a free loopback TCP port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitPort waits until 127.0.0.1:port accepts connections.
func WaitPort(t testing.TB, port int, what string, logf func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on 127.0.0.1:%d within 20s; its log:\n%s", what, port, logf())
}

// Server is a started server process.
type Server struct {
	Port int
	Dir  string // its configuration directory
	cmd  *exec.Cmd
	log  *syncBuf
}

// Log is what the server printed.
func (s *Server) Log() string { return s.log.String() }

// Stop kills the server (idempotent).
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func start(t testing.TB, what string, port int, dir string, name string, args ...string) *Server {
	t.Helper()
	s := &Server{Port: port, Dir: dir, log: &syncBuf{}}
	s.cmd = exec.Command(name, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", what, err)
	}
	t.Cleanup(s.Stop)
	WaitPort(t, port, what, s.Log)
	return s
}

// MkdirAll creates dir (and parents) with mode 0755 so that server
// processes running as another user can reach it.
func MkdirAll(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// OpenDir returns a new world-traversable temporary directory.
func OpenDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

// Chown gives path (recursively) to user name (a system user such as nobody).
func Chown(t testing.TB, path, user string) {
	t.Helper()
	if out, err := exec.Command("chown", "-R", user, path).CombinedOutput(); err != nil {
		t.Fatalf("chown %s %s: %v: %s", user, path, err, out)
	}
}

// Tmpfs mounts a tmpfs of size bytes at dir (a tiny share for disk-full
// tests); it needs root and skips otherwise.
func Tmpfs(t testing.TB, dir string, size int64, owner string) {
	t.Helper()
	MkdirAll(t, dir)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10)+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	if owner != "" {
		Chown(t, dir, owner)
	}
}

// Cut is a loopback TCP proxy to target. The first connection that
// carries more than After bytes from the server to the client is dropped
// (both ways) right there, once; every other connection passes untouched.
type Cut struct {
	Port  int
	After int64
	// Up, when set, counts the bytes from the client to the server
	// instead (an upload is cut).
	Up bool
	// Vanish makes the cut a Kill: the server is gone for good.
	Vanish bool
	Cuts   atomic.Int32
	l      net.Listener
	conns  atomic.Int32
	cut    atomic.Bool
	mu     sync.Mutex
	open   []net.Conn
	dead   bool
}

// Kill makes the server vanish: the listener and every connection close.
func (c *Cut) Kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dead = true
	c.l.Close()
	for _, x := range c.open {
		x.Close()
	}
}

func (c *Cut) track(x ...net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open = append(c.open, x...)
	return !c.dead
}

// NewCut starts a proxy to target that cuts a download once.
func NewCut(t testing.TB, target string, after int64) *Cut { return newCut(t, target, after, false) }

// NewCutUp starts a proxy to target that cuts an upload once: the first
// connection carrying more than after bytes to the server.
func NewCutUp(t testing.TB, target string, after int64) *Cut { return newCut(t, target, after, true) }

func newCut(t testing.TB, target string, after int64, up bool) *Cut {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cut{Port: l.Addr().(*net.TCPAddr).Port, After: after, Up: up, l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			c.conns.Add(1)
			go c.serve(in, target)
		}
	}()
	return c
}

// Conns is the number of connections accepted so far.
func (c *Cut) Conns() int { return int(c.conns.Load()) }

func (c *Cut) serve(in net.Conn, target string) {
	out, err := net.Dial("tcp", target)
	if err != nil {
		in.Close()
		return
	}
	var once sync.Once
	closeBoth := func() { once.Do(func() { in.Close(); out.Close() }) }
	defer closeBoth()
	if !c.track(in, out) {
		return
	}
	from, to := out, in
	if c.Up {
		go func() { io.Copy(in, out); closeBoth() }()
		from, to = in, out
	} else {
		go func() { io.Copy(out, in); closeBoth() }()
	}
	c.pipe(from, to)
}

// pipe copies from to to, cutting the connection as Cut says.
func (c *Cut) pipe(from, to net.Conn) {
	var n int64
	buf := make([]byte, 32<<10)
	for {
		k, err := from.Read(buf)
		if k > 0 {
			if !c.cut.Load() && n+int64(k) > c.After {
				if c.cut.CompareAndSwap(false, true) {
					to.Write(buf[:c.After-n])
					c.Cuts.Add(1)
					if c.Vanish {
						c.Kill()
					}
					return
				}
			}
			if _, werr := to.Write(buf[:k]); werr != nil {
				return
			}
			n += int64(k)
		}
		if err != nil {
			return
		}
	}
}

// SSHD is a running OpenSSH server for key-only SFTP as user "nobody".
type SSHD struct {
	*Server
	User       string
	KeyFile    string // the client's private key (ed25519, no passphrase)
	KnownHosts string // a known_hosts file listing the server's key for 127.0.0.1:Port
	HostKeyFP  string // SHA256:... of the server's host key
}

// StartSSHD starts sshd on a loopback port: user nobody, public key only.
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	sshd := Need(t, "sshd", "openssh-server")
	keygen := Need(t, "ssh-keygen", "openssh-client")
	dir := OpenDir(t)
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
		return string(out)
	}
	run(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "hostkey"))
	run(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "client"))
	pub, _ := os.ReadFile(filepath.Join(dir, "client.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o644)
	fp := strings.Fields(run(keygen, "-lf", filepath.Join(dir, "hostkey.pub")))[1]
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	port := FreePort(t)
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/hostkey
PidFile none
AuthorizedKeysFile %s/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers nobody
UsePAM no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel VERBOSE
`, port, dir, dir)
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o644)
	hpub, _ := os.ReadFile(filepath.Join(dir, "hostkey.pub"))
	kh := fmt.Sprintf("[127.0.0.1]:%d %s", port, hpub)
	os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(kh), 0o644)
	s := start(t, "sshd", port, dir, sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	return &SSHD{Server: s, User: "nobody", KeyFile: filepath.Join(dir, "client"), KnownHosts: filepath.Join(dir, "known_hosts"), HostKeyFP: fp}
}

// Samba is a running smbd with shares "images" (read-write for User),
// "ro" (read-only), "secret" (encryption required), "tiny" (a small tmpfs,
// for disk-full errors; only when MountTiny) and a user with a password.
type Samba struct {
	*Server
	User, Password string
	Root           string // directory of share "images"
	RO, Tiny       string // directories of shares "ro" and "tiny"
}

// SambaPassword is the test user's password (tests grep outputs for it).
const SambaPassword = "Smb-S3cret-Pa55word"

// StartSamba starts smbd on a loopback port with its own smb.conf. extra
// lines go into [global] (e.g. "server max protocol = NT1").
func StartSamba(t testing.TB, tiny int64, extra ...string) *Samba {
	t.Helper()
	smbd := Need(t, "smbd", "samba")
	pdbedit := Need(t, "pdbedit", "samba")
	dir := OpenDir(t)
	root, ro, tinyDir := filepath.Join(dir, "images"), filepath.Join(dir, "ro"), filepath.Join(dir, "tiny")
	for _, d := range []string{root, ro, tinyDir, filepath.Join(dir, "state"), filepath.Join(dir, "private"), filepath.Join(dir, "lock"), filepath.Join(dir, "cache"), filepath.Join(dir, "pid"), filepath.Join(dir, "ncalrpc")} {
		MkdirAll(t, d)
	}
	if tiny > 0 {
		Tmpfs(t, tinyDir, tiny, "nobody")
	}
	Chown(t, root, "nobody")
	port := FreePort(t)
	conf := fmt.Sprintf(`[global]
	smb ports = %d
	interfaces = 127.0.0.1
	bind interfaces only = yes
	disable netbios = yes
	server role = standalone server
	workgroup = RESCUE
	passdb backend = tdbsam:%[2]s/private/passdb.tdb
	private dir = %[2]s/private
	state directory = %[2]s/state
	lock directory = %[2]s/lock
	cache directory = %[2]s/cache
	pid directory = %[2]s/pid
	ncalrpc dir = %[2]s/ncalrpc
	log file = %[2]s/log.smbd
	log level = 1
	load printers = no
	printcap name = /dev/null
	disable spoolss = yes
	map to guest = never
	server min protocol = SMB2_02
	server signing = auto
	smb encrypt = if_required
	kernel oplocks = no
	%[3]s
[images]
	path = %[4]s
	read only = no
	valid users = nobody
[ro]
	path = %[5]s
	read only = yes
	valid users = nobody
[secret]
	path = %[4]s
	read only = no
	valid users = nobody
	smb encrypt = required
[tiny]
	path = %[6]s
	read only = no
	valid users = nobody
`, port, dir, strings.Join(extra, "\n\t"), root, ro, tinyDir)
	cfg := filepath.Join(dir, "smb.conf")
	os.WriteFile(cfg, []byte(conf), 0o644)
	cmd := exec.Command(pdbedit, "-s", cfg, "-a", "-u", "nobody", "-t")
	cmd.Stdin = strings.NewReader(SambaPassword + "\n" + SambaPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pdbedit: %v: %s", err, out)
	}
	s := start(t, "smbd", port, dir, smbd, "--foreground", "--no-process-group", "--debug-stdout", "-s", cfg)
	return &Samba{Server: s, User: "nobody", Password: SambaPassword, Root: root, RO: ro, Tiny: tinyDir}
}

// S3 is a running S3 server (versitygw with its posix backend).
type S3 struct {
	*Server
	Root           string // top directory: one subdirectory per bucket
	Endpoint       string // http://127.0.0.1:PORT
	Access, Secret string
}

// S3Secret is the test server's secret key (tests grep outputs for it).
const S3Secret = "S3-Secret-Key-Test-0123456789abcdef"

// StartS3 starts versitygw on a loopback port with bucket "images".
func StartS3(t testing.TB) *S3 {
	t.Helper()
	vgw := Need(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw")
	dir := OpenDir(t)
	root := filepath.Join(dir, "root")
	MkdirAll(t, filepath.Join(root, "images"))
	port := FreePort(t)
	s := start(t, "versitygw", port, dir, vgw, "--access", "rescuetest", "--secret", S3Secret,
		"--port", fmt.Sprintf("127.0.0.1:%d", port), "--quiet", "posix", root)
	return &S3{Server: s, Root: root, Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), Access: "rescuetest", Secret: S3Secret}
}
