// Package console writes the rescue system's log to the consoles the
// kernel was given (console=tty0 console=ttyS0,...), with time stamps, and
// makes sure the "RESCUE: ..." marker lines reach a serial line before the
// machine powers off: every marker is followed by tcdrain(3) and fsync on
// each console, because output still queued in a UART (or in a pipe owned
// by init) is lost at power-off.
package console

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/remote/cred"
	"golang.org/x/sys/unix"
)

// MarkerPrefix starts every line the QEMU tests and log scrapers wait for.
const MarkerPrefix = "RESCUE: "

// Console is a set of output devices written in lockstep.
type Console struct {
	mu    sync.Mutex
	out   []io.Writer
	ttys  []*os.File
	start time.Time
	now   func() time.Time
}

// New writes to the given writers (tests, or stdout when no console device
// can be opened).
func New(w ...io.Writer) *Console {
	return &Console{out: w, start: time.Now(), now: time.Now}
}

// Names returns the console devices named by console= arguments of a
// kernel command line ("ttyS0,115200n8" -> "/dev/ttyS0"), in order, or
// /dev/console when there are none.
func Names(kernelCmdline string) []string {
	var names []string
	seen := map[string]bool{}
	for _, f := range strings.Fields(kernelCmdline) {
		v, ok := strings.CutPrefix(f, "console=")
		if !ok {
			continue
		}
		dev, _, _ := strings.Cut(v, ",")
		if dev == "" || dev == "null" || strings.Contains(dev, "/") {
			continue
		}
		p := "/dev/" + dev
		if !seen[p] {
			seen[p] = true
			names = append(names, p)
		}
	}
	if len(names) == 0 {
		names = []string{"/dev/console"}
	}
	return names
}

// Open opens the console devices for writing (O_NOCTTY, so the rescue
// program does not steal the shell's controlling terminal). When none can
// be opened it writes to fallback instead (normally os.Stdout).
func Open(devices []string, fallback io.Writer) *Console {
	c := New()
	for _, d := range devices {
		f, err := os.OpenFile(d, os.O_WRONLY|unix.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		c.ttys = append(c.ttys, f)
		c.out = append(c.out, f)
	}
	if len(c.out) == 0 && fallback != nil {
		c.out = []io.Writer{fallback}
	}
	return c
}

// Tee adds w to the outputs: it gets every later write (the log kept
// for the report and the stick, a remote syslog). w must not block.
func (c *Console) Tee(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, w)
}

// Write writes p to every console as is.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.out {
		w.Write(p)
	}
	return len(p), nil
}

func (c *Console) stamp() string {
	now := c.now()
	return fmt.Sprintf("[%s +%6.1fs] ", now.UTC().Format("15:04:05"), now.Sub(c.start).Seconds())
}

// Printf writes one time-stamped log line.
func (c *Console) Printf(format string, args ...any) {
	line := c.stamp() + strings.TrimRight(cred.Scrub(fmt.Sprintf(format, args...)), "\n") + "\n"
	c.Write([]byte(line))
}

// Marker writes a time-stamped "RESCUE: ..." line and drains the consoles.
func (c *Console) Marker(format string, args ...any) {
	msg := strings.ReplaceAll(strings.TrimRight(cred.Scrub(fmt.Sprintf(format, args...)), "\n"), "\n", " ")
	c.Write([]byte(c.stamp() + MarkerPrefix + msg + "\n"))
	c.Drain()
}

// Drain waits until everything written has left the serial ports
// (tcdrain: ioctl TCSBRK with a non-zero argument) and flushes.
func (c *Console) Drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.ttys {
		unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
		f.Sync()
	}
}

// Close drains and closes the console devices.
func (c *Console) Close() error {
	c.Drain()
	for _, f := range c.ttys {
		f.Close()
	}
	return nil
}
