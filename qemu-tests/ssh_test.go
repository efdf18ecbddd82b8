package qemutests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var reSSHListening = regexp.MustCompile(`ssh: listening on port 22; host key (SHA256:\S+)`)

// TestSSH is remote access (issue 14, item 5): the rescue system booted
// with rescue.ssh= (an authorized_keys URL on the test's loopback server)
// and nothing else starts its SSH server; QEMU forwards a loopback port of
// the host to the guest's port 22 (user networking, restrict=on, hostfwd
// from 127.0.0.1 only). The stock OpenSSH client logs in with the right
// key, checks the host key against the fingerprint printed on the console,
// and runs gptdiff remotely (the compacted ESXi 5.0 disk against the
// original: exit 1, "compacted"); an interactive session (ssh -tt, no
// command) gets the guided screen and, choosing Shell there, the shell;
// another key and a password are refused.
func TestSSH(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	for _, p := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s (Debian openssh-client) is needed", p)
		}
	}
	t.Parallel()
	dir := t.TempDir()
	b, err := MakeBroken(tl, dir, BrokenOptions{Version: "5.0", Size: "1G", Mode: "windows"})
	if err != nil {
		t.Fatal(err)
	}
	keygen := func(name string) string {
		p := filepath.Join(dir, name)
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
		return p
	}
	good, bad := keygen("admin"), keygen("stranger")
	srv, err := ServeFiles(map[string]string{"/keys": good + ".pub"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := ln.Addr().String()
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	r := boot(t, "", VM{
		Name:    t.Name(),
		Kernel:  a.Kernel,
		Initrd:  a.Initramfs,
		Cmdline: KernelCmdline("ip=dhcp", "rescue.ssh=http://10.0.2.100/keys"),
		Disks:   []Disk{{Path: b.Damaged, ReadOnly: true}, {Path: b.Original, ReadOnly: true}},
		Net: &Net{Forwards: map[string]string{"10.0.2.100:80": srv.Addr},
			HostForwards: map[string]int{hostPort: 22}},
		Timeout: Scaled(3 * time.Minute),
	})
	defer r.Stop()
	m, err := r.Expect(reSSHListening, 0, MarkFailed, regexp.MustCompile(`STEP ssh WARNING.*`))
	if err != nil {
		t.Fatal(err)
	}
	announced := m[1]
	t.Logf("announced host key %s", announced)

	kh := filepath.Join(dir, "known_hosts")
	ssh := func(args ...string) (string, int) {
		base := []string{"-F", "/dev/null", "-p", fmt.Sprint(port), "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + kh,
			"-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=" + fmt.Sprint(int(Scaled(20*time.Second).Seconds())),
			"-o", "IdentitiesOnly=yes"}
		ctx, cancel := context.WithTimeout(context.Background(), Scaled(90*time.Second))
		defer cancel()
		cmd := exec.CommandContext(ctx, "ssh", append(base, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			code = cmd.ProcessState.ExitCode()
		}
		t.Logf("ssh %s: exit %d\n%s", strings.Join(args, " "), code, out)
		return string(out), code
	}
	out, code := ssh("-i", good, "root@127.0.0.1", "gptdiff /dev/vdb /dev/vda")
	if code != 1 || !strings.Contains(out, "compacted") {
		t.Errorf("remote gptdiff: exit %d (want 1, different), output lacks \"compacted\"", code)
	}
	fp, err := exec.Command("ssh-keygen", "-l", "-f", kh).CombinedOutput()
	if err != nil || !strings.Contains(string(fp), announced) {
		t.Errorf("the server's host key (%s) is not the one printed on the console (%s)", strings.TrimSpace(string(fp)), announced)
	}
	if out, code := ssh("-tt", "-i", good, "root@127.0.0.1", "echo pty-ok"); code != 0 || !strings.Contains(out, "pty-ok") {
		t.Errorf("session with a pty: exit %d", code)
	}
	// The interactive session (a pty, no command): the guided screen
	// with the disks, then Shell there gives the shell on the same pty.
	base := []string{"-F", "/dev/null", "-p", fmt.Sprint(port), "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + kh,
		"-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-tt", "-i", good, "root@127.0.0.1"}
	start := time.Now()
	if out, err := sshScreen(base, []consoleStep{
		{`\[p\] Power off`, "s"},
		{`To come back to the menu: rescue -menu`, ""},
	}, Scaled(30*time.Second)); err != nil {
		t.Errorf("interactive session: %v\n%s", err, out)
	}
	t.Logf("interactive session (screen, Shell, a command, exit): %v", time.Since(start).Round(100*time.Millisecond))
	if out, code := ssh("-i", bad, "root@127.0.0.1", "echo in"); code != 255 || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("another key: exit %d, want a refusal", code)
	}
	if out, code := ssh("-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no", "root@127.0.0.1", "echo in"); code != 255 || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("password: exit %d, want a refusal", code)
	}
	// Logged before the refusal, but the serial console may still be
	// carrying it to the host.
	if _, err := r.Expect(regexp.MustCompile(`refused key`), Scaled(30*time.Second), MarkFailed); err != nil {
		t.Errorf("the refused key is not in the console log: %v", err)
	}
}

// sshScreen runs the stock ssh (args, with -tt) interactively: for each
// step it waits (each within timeout) for want in the output, then types
// keys; then it has the shell run a command and exit, and waits for ssh.
func sshScreen(args []string, steps []consoleStep, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout*time.Duration(len(steps)+1))
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", args...)
	cmd.Env = append(os.Environ(), "TERM=vt100")
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	var out bytes.Buffer
	// Answer the terminal queries of the line editor and the screen
	// (cursor position, colours) as the person's terminal would.
	answers := []struct{ q, a string }{
		{"\x1b[6n", "\x1b[24;1R"},
		{"\x1b]10;?", "\x1b]10;rgb:ffff/ffff/ffff\x1b\\"},
		{"\x1b]11;?", "\x1b]11;rgb:0000/0000/0000\x1b\\"},
	}
	w := writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		out.Write(b)
		mu.Unlock()
		for _, qa := range answers {
			for range bytes.Count(b, []byte(qa.q)) {
				io.WriteString(in, qa.a)
			}
		}
		return len(b), nil
	})
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return "", err
	}
	defer cmd.Process.Kill()
	text := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	for i, s := range steps {
		rx := regexp.MustCompile(s.want)
		for deadline := time.Now().Add(timeout); !rx.MatchString(text()); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				return text(), fmt.Errorf("step %d: no %q after %v", i+1, s.want, timeout)
			}
		}
		time.Sleep(300 * time.Millisecond) // the rest of the frame
		if _, err := io.WriteString(in, s.keys); err != nil {
			return text(), err
		}
	}
	// The shell: typed again every 5 s until it runs (gosh's line editor
	// may still be starting: what it reads while it waits for the answers
	// to its queries is lost).
	for deadline, next := time.Now().Add(timeout), time.Now(); !strings.Contains(text(), "screen-then-shell-42"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return text(), fmt.Errorf("the shell after the screen did not run the command typed within %v", timeout)
		}
		if time.Now().After(next) {
			if _, err := io.WriteString(in, "echo screen-then-shell-$((6*7))\r"); err != nil {
				return text(), err
			}
			next = time.Now().Add(5 * time.Second)
		}
	}
	io.WriteString(in, "exit\r")
	if err := cmd.Wait(); err != nil {
		return text(), fmt.Errorf("ssh after exit in the shell: %v", err)
	}
	return text(), nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
