package sshd

import (
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// tmuxSSH is the stock OpenSSH client (ssh -tt) in a tmux pane of a
// tmux server of its own: keys with send-keys, the screen with
// capture-pane.
type tmuxSSH struct {
	t      *testing.T
	socket string
}

func (p *tmuxSSH) tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", p.socket}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (p *tmuxSSH) capture() string {
	out, _ := exec.Command("tmux", "-L", p.socket, "capture-pane", "-p", "-t", "main").Output()
	return string(out)
}

func (p *tmuxSSH) wait(re string) string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	return p.waitFor(fmt.Sprintf("%q", re), rx.MatchString)
}

// waitFor polls the pane until ok accepts it: the screen is redrawn
// asynchronously (the disks are examined in the background, a window
// change reaches the program later), so a test waits for the state it
// wants, never for text an earlier screen already showed.
func (p *tmuxSSH) waitFor(what string, ok func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := p.capture()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("after 30s the ssh session does not show %s:\n%s", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

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

	p := &tmuxSSH{t: t, socket: fmt.Sprintf("sshd-test-%d", rand.Int63())}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last screen:\n%s", p.capture())
		}
		exec.Command("tmux", "-L", p.socket, "kill-server").Run()
	})
	// A small window first: the home page does not fit, the title says
	// which lines show.
	cmd := "TERM=xterm-256color ssh -tt " + strings.Join(sshArgs, " ") + `; echo "SSH-EXIT=$?"; sleep 600`
	p.tmux("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", "80", "-y", "12", "sh", "-c", cmd)
	// The disks are examined in the background ("Examining the
	// disks..." first): wait until they are listed.
	clipped := regexp.MustCompile(`ESXi rescue .*\| home +lines 1-9 of \d+`)
	p.waitFor("the clipped home page listing sda.img", func(s string) bool {
		return clipped.MatchString(s) && strings.Contains(s, "sda.img")
	})
	// Larger: the whole page, with the actions, and no clipping note.
	p.tmux("resize-window", "-t", "main", "-x", "100", "-y", "40")
	p.waitFor("the whole page after the window change to 100x40", func(s string) bool {
		return strings.Contains(s, "[p] Power off") && strings.Contains(s, "sda.img") &&
			strings.Contains(s, "ESXi rescue") && !strings.Contains(s, "lines 1-")
	})
	// Shell: the shell on the same pty, the session's TERM.
	p.tmux("send-keys", "-t", "main", "s")
	p.wait(`To come back to the menu: rescue -menu`)
	p.tmux("send-keys", "-t", "main", "-l", "echo shell-$((6*7)) $TERM; tty; exit 7")
	p.tmux("send-keys", "-t", "main", "Enter")
	s := p.wait(`SSH-EXIT=\d+`)
	if !strings.Contains(s, "shell-42 xterm-256color") || !strings.Contains(s, "/dev/pts/") || !strings.Contains(s, "SSH-EXIT=7") {
		t.Errorf("the shell after the screen:\n%s", s)
	}
}
