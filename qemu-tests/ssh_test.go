package qemutests

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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
// original: exit 1, "compacted"); another key and a password are refused.
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
	if out, code := ssh("-i", bad, "root@127.0.0.1", "echo in"); code != 255 || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("another key: exit %d, want a refusal", code)
	}
	if out, code := ssh("-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no", "root@127.0.0.1", "echo in"); code != 255 || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("password: exit %d, want a refusal", code)
	}
	if !strings.Contains(r.Output(), "refused key") {
		t.Errorf("the refused key is not in the console log")
	}
}
