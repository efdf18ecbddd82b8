// Package udpcast receives a disk image sent by multicast with udpcast
// (udp-sender on the image server, the tool FOG and Clonezilla use): it
// runs udpcast's udp-receiver and hands its standard output on as a
// stream. Sources are named by URLs of the form
//
//	udpcast://[IFACE][?port=9000&start-timeout=120&receive-timeout=30]
//
// udpcast itself is reliable (receivers acknowledge every slice and
// missing blocks are sent again) as long as udp-receiver is not told to
// ignore lost data, which this package never does. What can still go
// wrong is a receiver that starts late (after the sender began), one the
// sender drops because it fell behind, or a sender that dies: udp-receiver
// then exits non-zero or stops early. The stream reports that as an error
// instead of a clean end, with udp-receiver's last messages; the caller
// must still check the bytes against an expected SHA-256 or block map.
package udpcast

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Scheme is the URL scheme of a udpcast source.
const Scheme = "udpcast://"

// ifaceName is what an interface name may be here (Linux allows more;
// names from the kernel and udev fit).
var ifaceName = regexp.MustCompile(`^[A-Za-z0-9_.-]{0,15}$`)

// Spec is a parsed udpcast source.
type Spec struct {
	Interface string // network interface; "" = udp-receiver's default (eth0)
	Port      int    // udpcast's port base (even), default 9000
	// StartTimeout is how long to wait for a sender and the start of the
	// transmission (default 120s); ReceiveTimeout how long a transmission
	// may go without a packet (default 30s).
	StartTimeout, ReceiveTimeout time.Duration
}

// IsURL reports whether s names a udpcast source.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// Parse parses a udpcast:// URL.
func Parse(s string) (*Spec, error) {
	if !IsURL(s) {
		return nil, fmt.Errorf("%s: not a %s URL", s, Scheme)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.Fragment != "" || u.Port() != "" {
		return nil, fmt.Errorf("%s: want udpcast://[INTERFACE][?port=9000&start-timeout=SECONDS&receive-timeout=SECONDS]", s)
	}
	sp := &Spec{Interface: u.Hostname(), Port: 9000, StartTimeout: 120 * time.Second, ReceiveTimeout: 30 * time.Second}
	if !ifaceName.MatchString(sp.Interface) || u.Host != sp.Interface {
		return nil, fmt.Errorf("%s: %q is not a network interface name", s, sp.Interface)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return nil, fmt.Errorf("%s: %s given %d times", s, k, len(v))
		}
		n, err := strconv.Atoi(v[0])
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s: %s=%s: want a positive number", s, k, v[0])
		}
		switch k {
		case "port":
			if n%2 != 0 || n > 65534 {
				return nil, fmt.Errorf("%s: port=%d: udpcast's port base must be even and at most 65534 (it uses port and port+1)", s, n)
			}
			sp.Port = n
		case "start-timeout":
			sp.StartTimeout = time.Duration(n) * time.Second
		case "receive-timeout":
			sp.ReceiveTimeout = time.Duration(n) * time.Second
		default:
			return nil, fmt.Errorf("%s: unknown parameter %q (known: port, start-timeout, receive-timeout)", s, k)
		}
	}
	return sp, nil
}

// String is the spec as a URL.
func (sp *Spec) String() string {
	return fmt.Sprintf("%s%s?port=%d", Scheme, sp.Interface, sp.Port)
}

// Args are udp-receiver's arguments: data to stdout, no keyboard, the
// timeouts, never --ignore-lost-data.
func (sp *Spec) Args() []string {
	a := []string{"--nokbd", "--portbase", strconv.Itoa(sp.Port),
		"--start-timeout", strconv.Itoa(int(sp.StartTimeout / time.Second)),
		"--receive-timeout", strconv.Itoa(int(sp.ReceiveTimeout / time.Second))}
	if sp.Interface != "" {
		a = append(a, "--interface", sp.Interface)
	}
	return a
}

// Command is the receiver program and any words before it (tests run it
// inside a network namespace with "ip netns exec NS udp-receiver").
var Command = []string{"udp-receiver"}

// Receiver is a running udp-receiver; read the image from it.
type Receiver struct {
	spec   *Spec
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *tail
	n      int64
	once   sync.Once
	werr   error
	err    error // sticky read error
}

// Start runs udp-receiver for spec. log, if not nil, receives its
// messages line by line (progress and errors).
func Start(ctx context.Context, sp *Spec, log func(format string, args ...any)) (*Receiver, error) {
	path, err := exec.LookPath(Command[0])
	if err != nil {
		return nil, fmt.Errorf("udpcast: %s is not in this system (Debian package udpcast): %w", Command[0], err)
	}
	args := append(append([]string(nil), Command[1:]...), sp.Args()...)
	cmd := exec.CommandContext(ctx, path, args...)
	r := &Receiver{spec: sp, cmd: cmd, stderr: &tail{log: log}}
	cmd.Stderr = r.stderr
	if r.out, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("udpcast: starting udp-receiver: %w", err)
	}
	if log != nil {
		log("udpcast: waiting up to %s for a sender on %s (udp-receiver %s)", sp.StartTimeout, sp, strings.Join(sp.Args(), " "))
	}
	return r, nil
}

// Read reads the image. At the end of udp-receiver's output it waits for
// the program: a non-zero exit (sender gone, receiver dropped, started
// late, timeouts) is an error naming the bytes received, never io.EOF.
func (r *Receiver) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.out.Read(p)
	r.n += int64(n)
	if err == io.EOF {
		if werr := r.wait(); werr != nil {
			r.err = werr
			return n, werr
		}
		if r.n == 0 {
			r.err = fmt.Errorf("udpcast: the transmission on %s ended without any data (udp-receiver said: %s)", r.spec, r.stderr.last())
			return n, r.err
		}
	} else if err != nil {
		r.err = fmt.Errorf("udpcast: reading from udp-receiver: %w", err)
		return n, r.err
	}
	return n, err
}

// Bytes is the number of bytes received so far.
func (r *Receiver) Bytes() int64 { return r.n }

func (r *Receiver) wait() error {
	r.once.Do(func() {
		err := r.cmd.Wait()
		if err == nil {
			return
		}
		why := r.stderr.last()
		if why == "" {
			why = "no message"
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && r.n == 0 {
			r.werr = fmt.Errorf("udpcast: no transmission on %s within %s (no sender, or this receiver started after the transmission had begun; udp-receiver %s: %s)",
				r.spec, r.spec.StartTimeout, ee.ProcessState, why)
			return
		}
		if errors.As(err, &ee) {
			r.werr = fmt.Errorf("udpcast: udp-receiver failed (%s) after %d bytes: %s — the image is incomplete (receiver started late, fell behind and was dropped, or the sender stopped)",
				ee.ProcessState, r.n, why)
			return
		}
		r.werr = fmt.Errorf("udpcast: udp-receiver after %d bytes: %w (%s)", r.n, err, why)
	})
	return r.werr
}

// Close stops udp-receiver if it still runs and waits for it.
func (r *Receiver) Close() error {
	if r.cmd.ProcessState == nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
	}
	r.out.Close()
	r.wait()
	return nil
}

// tail keeps the last lines udp-receiver printed and passes each on.
type tail struct {
	mu    sync.Mutex
	log   func(string, ...any)
	buf   []byte
	lines []string
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexAny(t.buf, "\r\n")
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(t.buf[:i]))
		t.buf = t.buf[i+1:]
		if line == "" {
			continue
		}
		t.lines = append(t.lines, line)
		if len(t.lines) > 5 {
			t.lines = t.lines[1:]
		}
		if t.log != nil && !strings.HasPrefix(line, "bytes=") {
			t.log("udp-receiver: %s", line)
		}
	}
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

// last returns udp-receiver's last messages in one line.
func (t *tail) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if rest := strings.TrimSpace(string(t.buf)); rest != "" {
		lines = append(lines, rest)
	}
	var keep []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "bytes=") && !strings.HasPrefix(l, "Udp-receiver ") && !strings.HasPrefix(l, "UDP receiver for ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "; ")
}
