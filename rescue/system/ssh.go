package system

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/sshd"
)

// SSHInfo is the record of the SSH server, for the report.
type SSHInfo struct {
	Port           int      `json:"port"`
	HostKey        string   `json:"host_key"`        // SHA256 fingerprint of this boot's fresh host key
	AuthorizedKeys []string `json:"authorized_keys"` // fingerprints of the keys that may log in
	From           string   `json:"from"`            // rescue.ssh= (redacted)
	PID            int      `json:"-"`               // rescue-sshd's process
}

// SSHPort is the port the SSH server listens on; sshLog receives its
// messages (logins, refused keys).
var (
	SSHPort = 22
	sshLog  = "/dev/console"
)

// SSH starts the SSH server (rescue.ssh=): the authorized_keys file or URL
// (a path is looked up in the rescue system, then on the stick's FAT
// partition), a fresh ed25519 host key whose fingerprint goes to the
// console and the report, and rescue-sshd as a process of its own, so it
// keeps serving after this process has become the shell.
func (s *System) SSH(ctx context.Context, c *cmdline.Config) (any, error) {
	var data []byte
	var err error
	if cmdline.IsURL(c.SSH) {
		data, err = s.fetchSmall(ctx, c.SSH)
	} else {
		data, err = os.ReadFile(c.SSH)
		if errors.Is(err, fs.ErrNotExist) {
			data, err = readFromStick(c.SSH)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("rescue.ssh=%s: %w", cmdline.RedactURL(c.SSH), err)
	}
	keys, err := sshd.ParseAuthorizedKeys(data)
	if err != nil {
		return nil, fmt.Errorf("rescue.ssh=%s: %w", cmdline.RedactURL(c.SSH), err)
	}
	info := &SSHInfo{Port: SSHPort, From: cmdline.RedactURL(c.SSH)}
	for _, k := range keys {
		info.AuthorizedKeys = append(info.AuthorizedKeys, sshd.Fingerprint(k))
	}
	dir := filepath.Join(s.TmpDir, "rescue-ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	signer, pemBytes, err := sshd.NewHostKey()
	if err != nil {
		return nil, fmt.Errorf("making the host key: %w", err)
	}
	info.HostKey = sshd.Fingerprint(signer.PublicKey())
	hk, ak := filepath.Join(dir, "host_ed25519_key"), filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(hk, pemBytes, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(ak, data, 0o600); err != nil {
		return nil, err
	}
	bin, err := findTool("rescue-sshd")
	if err != nil {
		return nil, err
	}
	out, err := os.OpenFile(sshLog, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		out, _ = os.Open(os.DevNull)
	}
	cmd := exec.Command(bin, "-hostkey", hk, "-authorized-keys", ak, "-listen", fmt.Sprintf(":%d", SSHPort))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting rescue-sshd: %w", err)
	}
	info.PID = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() // reaped while this process lives; it keeps running after the exec to the shell
	if out != nil {
		out.Close()
	}
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(SSHPort))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return info, fmt.Errorf("rescue-sshd stopped at once (see its messages above)")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return info, fmt.Errorf("rescue-sshd does not listen on port %d (see its messages above)", SSHPort)
		}
	}
	s.Con.Printf("ssh: listening on port %d; host key %s (ED25519, new this boot: compare it when you connect); %d authorized keys from %s",
		SSHPort, info.HostKey, len(keys), info.From)
	return info, nil
}

// findTool finds one of our commands in the initramfs or on PATH.
func findTool(name string) (string, error) {
	for _, p := range []string{"/bbin/" + name, "/bin/" + name} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s is not in this system", name)
}
