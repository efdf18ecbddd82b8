package sshd

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAuthorizedKeys(t *testing.T) {
	dir := t.TempDir()
	pub := keygen(t, dir, "a")
	line := strings.TrimSpace(readFile(t, pub))
	for _, tc := range []struct {
		name, text string
		n          int
		err        string
	}{
		{"one", line + "\n", 1, ""},
		{"comments and blanks", "# admins\n\n" + line + "\n" + line + " second\n", 2, ""},
		{"options refused", `from="10.0.0.0/8" ` + line, 0, "options"},
		{"empty", "# none\n", 0, "no key"},
		{"garbage", "ssh-ed25519 AAAA\n", 0, "line 1"},
	} {
		keys, err := ParseAuthorizedKeys([]byte(tc.text))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: got %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || len(keys) != tc.n {
			t.Errorf("%s: %d keys, %v", tc.name, len(keys), err)
		}
	}
	if _, err := Server(Config{Shell: []string{"/bin/sh"}}); err == nil {
		t.Error("a server without keys would let anyone in (gliderlabs: no handler = no auth)")
	}
}

// keygen makes an ed25519 key pair with the stock ssh-keygen; returns the .pub path.
func keygen(t *testing.T, dir, name string) string {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen (Debian openssh-client) is needed: %v", err)
	}
	p := filepath.Join(dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	return p + ".pub"
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOpenSSHClient: the stock OpenSSH client against the server on a
// loopback port: the host key is the one announced (StrictHostKeyChecking
// with a known_hosts line made from it), the right key runs commands with
// their output and exit status and gets a pty with -tt; another key and
// password logins are refused.
func TestOpenSSHClient(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatalf("ssh (Debian openssh-client) is needed: %v", err)
	}
	dir := t.TempDir()
	good, bad := keygen(t, dir, "good"), keygen(t, dir, "bad")
	keys, err := ParseAuthorizedKeys([]byte(readFile(t, good)))
	if err != nil {
		t.Fatal(err)
	}
	hk, pemBytes, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	hkPath := filepath.Join(dir, "host")
	os.WriteFile(hkPath, pemBytes, 0o600)
	if hk2, err := LoadHostKey(hkPath); err != nil || Fingerprint(hk2.PublicKey()) != Fingerprint(hk.PublicKey()) {
		t.Fatalf("LoadHostKey: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Serve(ctx, ln, Config{HostKey: hk, Keys: keys, Shell: []string{"/bin/sh"}, Env: []string{"PATH=/usr/bin:/bin"}, Log: t.Logf})
	kh := filepath.Join(dir, "known_hosts")
	os.WriteFile(kh, []byte(KnownHostsLine("127.0.0.1", port, hk.PublicKey())+"\n"), 0o644)
	// ssh-keygen agrees on the fingerprint we print.
	fp, err := exec.Command("ssh-keygen", "-l", "-f", kh).CombinedOutput()
	if err != nil || !strings.Contains(string(fp), Fingerprint(hk.PublicKey())) {
		t.Fatalf("ssh-keygen -l: %s %v (want %s)", fp, err, Fingerprint(hk.PublicKey()))
	}
	ssh := func(extra ...string) (string, int) {
		args := append([]string{"-p", fmt.Sprint(port), "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=20", "-F", "/dev/null"}, extra...)
		cmd := exec.Command("ssh", args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return string(out), code
	}
	priv := strings.TrimSuffix(good, ".pub")
	if out, code := ssh("-i", priv, "root@127.0.0.1", "echo hello; echo err >&2; exit 3"); code != 3 || !strings.Contains(out, "hello") || !strings.Contains(out, "err") {
		t.Errorf("command: exit %d, %q", code, out)
	}
	if out, code := ssh("-i", priv, "root@127.0.0.1", "env"); code != 0 || strings.Contains(out, "LC_") || !strings.Contains(out, "PATH=/usr/bin:/bin") {
		t.Errorf("env: exit %d, %q (no client environment must pass)", code, out)
	}
	if out, code := ssh("-tt", "-i", priv, "root@127.0.0.1", "tty; echo TERM=$TERM"); code != 0 || !strings.Contains(out, "/dev/pts/") {
		t.Errorf("pty: exit %d, %q", code, out)
	}
	if out, code := ssh("-i", strings.TrimSuffix(bad, ".pub"), "root@127.0.0.1", "echo in"); code != 255 || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("wrong key: exit %d, %q", code, out)
	}
	if out, code := ssh("-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no", "root@127.0.0.1", "echo in"); code != 255 || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("password: exit %d, %q", code, out)
	}
	if out, code := ssh("-i", priv, "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:40123:127.0.0.1:1", "root@127.0.0.1", "true"); code == 0 || !strings.Contains(out, "forwarding failed") {
		t.Errorf("remote port forwarding: exit %d, %q", code, out)
	}
	// A host key other than the announced one is refused by the client.
	other, _, _ := NewHostKey()
	os.WriteFile(kh, []byte(KnownHostsLine("127.0.0.1", port, other.PublicKey())+"\n"), 0o644)
	if out, code := ssh("-i", priv, "root@127.0.0.1", "true"); code != 255 || !strings.Contains(out, "HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("changed host key: exit %d, %q", code, out)
	}
}

func FuzzParseAuthorizedKeys(f *testing.F) {
	f.Add([]byte("# c\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtJ2V1sLsK6e4bM5F8E0m0wX0bW6m3Vt0bU6QyQ0k0a x\n"))
	f.Add([]byte(`from="x" ssh-rsa AAAA`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseAuthorizedKeys(data)
		if err == nil && len(keys) == 0 {
			t.Fatal("no keys and no error")
		}
	})
}
