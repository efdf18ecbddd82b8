// Package sshd is the rescue system's SSH server (rescue.ssh=): public
// keys from an authorized_keys file only — no passwords, no
// keyboard-interactive, no port forwarding, no agent or X11 forwarding, no
// subsystems — with a fresh ed25519 host key each boot. An interactive
// session (a pty, no command) gets the guided screen (Config.Screen: the
// same rescue/tui screen as the console's, TERM from the pty request,
// resized by window-change requests) and then the rescue shell (gosh) on
// the same pty; ssh host CMD runs the command (ssh host gptdiff /dev/sda)
// with its exit status. Built on github.com/gliderlabs/ssh (over
// golang.org/x/crypto/ssh) and github.com/creack/pty, as u-root's own
// cmds/exp/newsshd is; unlike that one it accepts every key of the file
// (not only the first), refuses key options it cannot honour, and passes
// no client environment to the shell.
package sshd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// ParseAuthorizedKeys parses an authorized_keys file. Blank lines and
// comments are skipped; a line with options (from=, command=, ...) is an
// error, since ignoring a restriction would grant more than was meant.
func ParseAuthorizedKeys(data []byte) ([]gossh.PublicKey, error) {
	var keys []gossh.PublicKey
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, opts, _, err := gossh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("authorized_keys line %d: %w", i+1, err)
		}
		if len(opts) > 0 {
			return nil, fmt.Errorf("authorized_keys line %d: options (%s) are not supported here; give the plain key", i+1, strings.Join(opts, ","))
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("authorized_keys holds no key")
	}
	return keys, nil
}

// NewHostKey makes a fresh ed25519 host key and returns it with its
// OpenSSH PEM encoding (for a 0600 file the server reads).
func NewHostKey() (gossh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "rescue host key")
	if err != nil {
		return nil, nil, err
	}
	return s, pem.EncodeToMemory(block), nil
}

// LoadHostKey reads a host key file written from NewHostKey's PEM.
func LoadHostKey(path string) (gossh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	s, err := gossh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", path, err)
	}
	return s, nil
}

// Fingerprint is a key's SHA256 fingerprint as ssh-keygen -l prints it.
func Fingerprint(k gossh.PublicKey) string { return gossh.FingerprintSHA256(k) }

// Config says how the server runs.
type Config struct {
	HostKey gossh.Signer
	Keys    []gossh.PublicKey // who may log in
	// Shell is the shell and its arguments for an interactive session;
	// a command runs as Shell... -c COMMAND.
	Shell []string
	// Screen, when set, is the command an interactive session (a pty
	// and no command) gets first: the guided screen (rescue -menu). When
	// it ends (Shell chosen, or it failed) the session gets Shell on the
	// same pty; the screen's own Reboot, Power off and Boot ESXi act.
	Screen []string
	// Env is the environment of sessions (TERM is added from a pty request).
	Env []string
	Log func(format string, args ...any)
}

// Server returns the SSH server for cfg (call Serve on a listener).
func Server(cfg Config) (*ssh.Server, error) {
	if cfg.HostKey == nil || len(cfg.Keys) == 0 || len(cfg.Shell) == 0 {
		return nil, errors.New("sshd: a host key, at least one authorized key and a shell are needed")
	}
	logf := cfg.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	srv := &ssh.Server{
		Version:     "ESXi-rescue",
		HostSigners: []ssh.Signer{cfg.HostKey},
		// Only public keys: with PasswordHandler and
		// KeyboardInteractiveHandler nil, x/crypto/ssh offers neither.
		PublicKeyHandler: func(ctx ssh.Context, key ssh.PublicKey) bool {
			for _, k := range cfg.Keys {
				if ssh.KeysEqual(k, key) {
					logf("ssh: %s@%s logged in with key %s", ctx.User(), ctx.RemoteAddr(), Fingerprint(key))
					return true
				}
			}
			logf("ssh: refused key %s from %s", Fingerprint(key), ctx.RemoteAddr())
			return false
		},
		ServerConfigCallback: func(ssh.Context) *gossh.ServerConfig {
			return &gossh.ServerConfig{MaxAuthTries: 6}
		},
		ConnectionFailedCallback: func(c net.Conn, err error) {
			if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) { // port probes
				logf("ssh: connection from %s failed: %v", c.RemoteAddr(), err)
			}
		},
		// Only sessions: no direct-tcpip, no forwarding of any kind.
		ChannelHandlers: map[string]ssh.ChannelHandler{"session": ssh.DefaultSessionHandler},
		Handler:         func(s ssh.Session) { handle(s, cfg, logf) },
	}
	return srv, nil
}

func handle(s ssh.Session, cfg Config, logf func(string, ...any)) {
	ptyReq, winCh, isPty := s.Pty()
	if !isPty {
		args := append([]string(nil), cfg.Shell...)
		if cmd := s.RawCommand(); cmd != "" {
			args = append(args, "-c", cmd)
			logf("ssh: %s runs: %s", s.RemoteAddr(), cmd)
		}
		cmd := exec.CommandContext(s.Context(), args[0], args[1:]...)
		cmd.Env = append([]string(nil), cfg.Env...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s.Stderr()
		err := cmd.Run()
		if err != nil && exitCode(err) == 255 {
			fmt.Fprintf(s.Stderr(), "rescue sshd: %v\n", err)
		}
		s.Exit(exitCode(err))
		return
	}
	// One pty for the whole session: the screen, then the shell on it.
	ptmx, tty, err := pty.Open()
	if err != nil {
		fmt.Fprintf(s.Stderr(), "rescue sshd: %v\n", err)
		s.Exit(255)
		return
	}
	defer ptmx.Close()
	pty.Setsize(ptmx, &pty.Winsize{Rows: uint16(ptyReq.Window.Height), Cols: uint16(ptyReq.Window.Width)})
	go func() { // window-change requests: the kernel sends SIGWINCH to the pty's foreground
		for w := range winCh {
			pty.Setsize(ptmx, &pty.Winsize{Rows: uint16(w.Height), Cols: uint16(w.Width)})
		}
	}()
	go io.Copy(ptmx, s)
	done := make(chan struct{})
	go func() { io.Copy(s, ptmx); close(done) }()
	env := append(append([]string(nil), cfg.Env...), "TERM="+ptyReq.Term)
	args := append([]string(nil), cfg.Shell...)
	if cmd := s.RawCommand(); cmd != "" {
		args = append(args, "-c", cmd)
		logf("ssh: %s runs: %s", s.RemoteAddr(), cmd)
	} else if len(cfg.Screen) > 0 {
		logf("ssh: %s gets the guided screen", s.RemoteAddr())
		saved, _ := term.GetState(int(tty.Fd()))
		if err := runOn(s.Context(), tty, env, cfg.Screen); err != nil && s.Context().Err() == nil {
			fmt.Fprintf(tty, "\r\nrescue sshd: the screen ended (%v); here is the shell.\r\n", err)
		}
		if saved != nil {
			term.Restore(int(tty.Fd()), saved) // cooked again, whatever the screen left
		}
		if s.Context().Err() != nil { // the client has gone
			tty.Close()
			return
		}
	}
	err = runOn(s.Context(), tty, env, args)
	tty.Close()
	select { // the rest of the output, but never hang on a child holding the pty
	case <-done:
	case <-time.After(time.Second):
	}
	s.Exit(exitCode(err))
}

// runOn runs args in a session of its own with tty as its controlling
// terminal and standard files, and waits for it.
func runOn(ctx context.Context, tty *os.File, env, args []string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	return cmd.Run()
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 255
}

// Serve runs the server on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	srv, err := Server(cfg)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); srv.Close() }()
	err = srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// KnownHostsLine is the line a client's known_hosts needs for host (as
// "[host]:port" when port is not 22).
func KnownHostsLine(host string, port int, k gossh.PublicKey) string {
	if port != 22 {
		host = fmt.Sprintf("[%s]:%d", host, port)
	}
	return host + " " + string(bytes.TrimSpace(gossh.MarshalAuthorizedKey(k)))
}
