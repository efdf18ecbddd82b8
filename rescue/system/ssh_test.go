package system

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/rescue/console"
)

// TestSSH: the SSH step starts rescue-sshd (built from ./cmds/rescue-sshd)
// as a process of its own with the keys of rescue.ssh= and a fresh host
// key; the stock ssh client logs in with the fingerprint the step
// reported, and a bad authorized_keys file fails the step.
func TestSSH(t *testing.T) {
	for _, p := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s (openssh-client) is needed", p)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "rescue-sshd"), "../../cmds/rescue-sshd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v %s", err, out)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	key := filepath.Join(dir, "id")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	oldPort, oldLog := SSHPort, sshLog
	SSHPort, sshLog = port, filepath.Join(dir, "sshd.log")
	defer func() { SSHPort, sshLog = oldPort, oldLog }()
	os.WriteFile(sshLog, nil, 0o644)

	var buf bytes.Buffer
	s := New(console.New(&buf))
	s.TmpDir = dir
	if _, err := s.SSH(context.Background(), parse(t, "rescue.ssh="+filepath.Join(dir, "nokeys"))); err == nil {
		t.Fatal("a missing authorized_keys file started the server")
	}
	os.WriteFile(filepath.Join(dir, "bad_keys"), []byte("# nobody\n"), 0o644)
	if _, err := s.SSH(context.Background(), parse(t, "rescue.ssh="+filepath.Join(dir, "bad_keys"))); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("an empty authorized_keys: %v", err)
	}
	details, err := s.SSH(context.Background(), parse(t, "rescue.ssh="+key+".pub"))
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	info := details.(*SSHInfo)
	t.Cleanup(func() {
		if p, err := os.FindProcess(info.PID); err == nil {
			p.Kill()
		}
	})
	if !strings.Contains(buf.String(), info.HostKey) || len(info.AuthorizedKeys) != 1 {
		t.Errorf("console %q, info %+v", buf.String(), info)
	}
	// The client checks the host key against the announced fingerprint.
	kh := filepath.Join(dir, "known_hosts")
	scan, _ := exec.Command("ssh-keyscan", "-p", fmt.Sprint(port), "-t", "ed25519", "127.0.0.1").Output()
	os.WriteFile(kh, scan, 0o644)
	fp, _ := exec.Command("ssh-keygen", "-l", "-f", kh).Output()
	if !strings.Contains(string(fp), info.HostKey) {
		t.Fatalf("host key served %q, announced %s", fp, info.HostKey)
	}
	out, err := exec.Command("ssh", "-F", "/dev/null", "-p", fmt.Sprint(port), "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile="+kh, "-o", "StrictHostKeyChecking=yes", "root@127.0.0.1", "echo remote-ok").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "remote-ok") {
		t.Fatalf("ssh: %v %s", err, out)
	}
	log, _ := os.ReadFile(sshLog)
	if !strings.Contains(string(log), "logged in with key") {
		t.Errorf("sshd log: %s", log)
	}
}
