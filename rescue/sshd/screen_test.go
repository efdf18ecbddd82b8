package sshd

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/tmuxtest"
)

// TestOpenSSHScreen: an interactive session of the stock OpenSSH client
// (ssh -tt, key auth, in a tmux pane) gets the guided screen — the real
// rescue program's (rescue -menu) on the session's pty, with TERM from
// the pty request and its size from the window-change requests tmux's
// resizing makes ssh send — and Shell there gives the shell on the same
// pty; ssh host CMD still runs the command, with no screen.
func TestOpenSSHScreen(t *testing.T) {
	for _, tool := range []string{"ssh", "tmux"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (build.sh installs it): %v", tool, err)
		}
	}
	dir := t.TempDir()
	rescue := filepath.Join(dir, "rescue")
	if out, err := exec.Command("go", "build", "-o", rescue, "../../cmds/rescue").CombinedOutput(); err != nil {
		t.Fatalf("building cmds/rescue: %v\n%s", err, out)
	}
	for _, n := range []string{"sda.img", "sdb.img"} {
		f, err := os.Create(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(1 << 30)
		f.Close()
	}
	good := keygen(t, dir, "good")
	keys, err := ParseAuthorizedKeys([]byte(readFile(t, good)))
	if err != nil {
		t.Fatal(err)
	}
	hk, _, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	disks := filepath.Join(dir, "sda.img") + "," + filepath.Join(dir, "sdb.img")
	screen := []string{rescue, "-menu", "-no-shell", "-printk=", "-disks", disks, "-undo-dir", dir}
	go Serve(ctx, ln, Config{HostKey: hk, Keys: keys, Shell: []string{"/bin/sh"}, Screen: screen,
		Env: []string{"PATH=/usr/bin:/bin", "HOME=" + dir}, Log: t.Logf})
	kh := filepath.Join(dir, "known_hosts")
	os.WriteFile(kh, []byte(KnownHostsLine("127.0.0.1", port, hk.PublicKey())+"\n"), 0o644)
	sshArgs := []string{"-p", fmt.Sprint(port), "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=20", "-F", "/dev/null",
		"-i", strings.TrimSuffix(good, ".pub"), "root@127.0.0.1"}

	// ssh host CMD: the command, not the screen (with and without a pty).
	for _, extra := range [][]string{nil, {"-tt"}} {
		out, err := exec.Command("ssh", append(extra, append(sshArgs, "echo ran-$((6*7)) $TERM")...)...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ran-42") || strings.Contains(string(out), "Power off") {
			t.Errorf("ssh %v host CMD: %v %q", extra, err, out)
		}
	}

	// A small window first: the home page does not fit, the title says
	// which lines show.
	cmd := "TERM=xterm-256color ssh -tt " + strings.Join(sshArgs, " ") + `; echo "SSH-EXIT=$?"; sleep 600`
	p := tmuxtest.Start(t, tmuxtest.Config{Socket: "sshd-test", W: 80, H: 12, Command: cmd})
	// The disks are examined in the background ("Examining the
	// disks..." first): wait until they are listed.
	clipped := regexp.MustCompile(`ESXi rescue .*\| home +lines 1-9 of \d+`)
	p.WaitFor("the clipped home page listing sda.img", 30*time.Second, func(s string) bool {
		return clipped.MatchString(s) && strings.Contains(s, "sda.img")
	})
	// Larger: the whole page, with the actions, and no clipping note.
	p.Tmux("resize-window", "-t", "main", "-x", "100", "-y", "40")
	p.WaitFor("the whole page after the window change to 100x40", 30*time.Second, func(s string) bool {
		return strings.Contains(s, "[p] Power off") && strings.Contains(s, "sda.img") &&
			strings.Contains(s, "ESXi rescue") && !strings.Contains(s, "lines 1-")
	})
	// Shell: the shell on the same pty, the session's TERM.
	p.Tmux("send-keys", "-t", "main", "s")
	p.Wait(`To come back to the menu: rescue -menu`, 30*time.Second)
	p.Tmux("send-keys", "-t", "main", "-l", "echo shell-$((6*7)) $TERM; tty; exit 7")
	p.Tmux("send-keys", "-t", "main", "Enter")
	s := p.Wait(`SSH-EXIT=\d+`, 30*time.Second)
	if !strings.Contains(s, "shell-42 xterm-256color") || !strings.Contains(s, "/dev/pts/") || !strings.Contains(s, "SSH-EXIT=7") {
		t.Errorf("the shell after the screen:\n%s", s)
	}
}
