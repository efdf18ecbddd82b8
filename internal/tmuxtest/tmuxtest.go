// Package tmuxtest runs a full-screen terminal program in a tmux pane of
// a tmux server of its own (tmux -L) for tests: keys go in with
// send-keys, the screen comes out with capture-pane, and a test waits by
// polling the screen for the state it wants. It needs tmux.
package tmuxtest

import (
	"fmt"
	"math/rand"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Config says what to run in the pane.
type Config struct {
	Socket  string // the tmux server's name starts with this
	W, H    int    // the pane's size
	Dir     string // the working directory ("": tmux's default)
	Command string // run with sh -c
	Join    bool   // Capture joins lines the terminal wrapped (capture-pane -J)
}

// Pane is a program running in the pane "main" of its own tmux server.
type Pane struct {
	t      testing.TB
	socket string
	join   bool
}

// Start starts c.Command in a new pane. The tmux server is killed when the
// test ends, after logging the last screen if the test failed.
func Start(t testing.TB, c Config) *Pane {
	t.Helper()
	p := &Pane{t: t, socket: fmt.Sprintf("%s-%d", c.Socket, rand.Int63()), join: c.Join}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last screen:\n%s", p.Capture())
		}
		exec.Command("tmux", "-L", p.socket, "kill-server").Run()
	})
	args := []string{"-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", fmt.Sprint(c.W), "-y", fmt.Sprint(c.H)}
	if c.Dir != "" {
		args = append(args, "-c", c.Dir)
	}
	p.Tmux(append(args, "sh", "-c", c.Command)...)
	return p
}

// Tmux runs a tmux command on the pane's server and fails the test if it
// fails.
func (p *Pane) Tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", p.socket}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Keys sends tmux key names (Enter, Escape, PageDown) or, with a "text:"
// prefix, literal text, 150 ms apart, as a person types.
func (p *Pane) Keys(keys ...string) {
	p.t.Helper()
	for _, k := range keys {
		if s, ok := strings.CutPrefix(k, "text:"); ok {
			p.Tmux("send-keys", "-t", "main", "-l", s)
		} else {
			p.Tmux("send-keys", "-t", "main", k)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// Capture is the screen (with Config.Join, a line wider than the screen
// shows as one long line).
func (p *Pane) Capture() string {
	args := []string{"-L", p.socket, "capture-pane", "-p", "-t", "main"}
	if p.join {
		args = append(args, "-J")
	}
	out, _ := exec.Command("tmux", args...).Output()
	return string(out)
}

// Wait polls the screen until re matches it.
func (p *Pane) Wait(re string, timeout time.Duration) string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	return p.WaitFor(fmt.Sprintf("%q", re), timeout, rx.MatchString)
}

// WaitFor polls the screen until ok accepts it, and fails the test with
// the screen after timeout. A program redraws asynchronously (it may
// examine disks in the background, a window change reaches it later, tmux
// may take a frame in pieces), so a test waits for the state it then
// looks at, never for text that an earlier screen already showed.
func (p *Pane) WaitFor(what string, timeout time.Duration, ok func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := p.Capture()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("after %s the screen does not show %s:\n%s", timeout, what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
