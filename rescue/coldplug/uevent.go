package coldplug

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Uevent is one kernel uevent as the kernel broadcasts it on the
// NETLINK_KOBJECT_UEVENT socket: "ACTION@DEVPATH\0KEY=VALUE\0...".
type Uevent struct {
	Action  string            // add, remove, change, bind, ...
	DevPath string            // /devices/pci0000:00/0000:00:04.0/host2/target2:0:0/2:0:0:0
	Env     map[string]string // ACTION, DEVPATH, SUBSYSTEM, MODALIAS, SEQNUM, ...
}

// Modalias returns the event's MODALIAS ("" when the device has none).
func (u *Uevent) Modalias() string { return u.Env["MODALIAS"] }

// ParseUevent parses one kernel uevent message. Messages that udevd
// rebroadcasts (they start with "libudev\0", on another multicast group)
// and anything without the "ACTION@DEVPATH" header are errors.
func ParseUevent(b []byte) (*Uevent, error) {
	parts := bytes.Split(b, []byte{0})
	if len(parts) == 0 || len(parts[0]) == 0 {
		return nil, errors.New("uevent: empty message")
	}
	action, devpath, ok := strings.Cut(string(parts[0]), "@")
	if !ok || action == "" || !strings.HasPrefix(devpath, "/") {
		return nil, fmt.Errorf("uevent: no ACTION@DEVPATH header: %q", truncate(string(parts[0]), 40))
	}
	u := &Uevent{Action: action, DevPath: devpath, Env: map[string]string{}}
	for _, p := range parts[1:] {
		if k, v, ok := strings.Cut(string(p), "="); ok && k != "" {
			u.Env[k] = v
		}
	}
	if a, ok := u.Env["ACTION"]; ok && a != action {
		return nil, fmt.Errorf("uevent: header action %q but ACTION=%q", action, a)
	}
	return u, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// UeventSource delivers kernel uevents. Read blocks until the next one;
// it returns ErrLost when the kernel dropped events (the socket buffer
// overflowed: rescan sysfs) and any other error once closed. Close
// unblocks a pending Read.
type UeventSource interface {
	Read() (*Uevent, error)
	Close() error
}

// ErrLost says that uevents were dropped before they could be read.
var ErrLost = errors.New("uevent: events lost (receive buffer overflowed)")

// netlinkUevents reads the kernel's uevent multicast group.
type netlinkUevents struct {
	f   *os.File
	buf []byte
}

// OpenUevents subscribes to the kernel's uevents (a NETLINK_KOBJECT_UEVENT
// socket bound to multicast group 1, the kernel's own broadcasts; udev is
// not needed). The socket is non-blocking under Go's poller so that Close
// interrupts a Read.
func OpenUevents() (UeventSource, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// A burst (a SAS HBA with many disks) must not overflow the default
	// buffer; FORCE works as root, the plain option is the fallback.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent socket: bind: %w", err)
	}
	return &netlinkUevents{f: os.NewFile(uintptr(fd), "uevent"), buf: make([]byte, 64<<10)}, nil
}

func (n *netlinkUevents) Read() (*Uevent, error) {
	for {
		k, err := n.f.Read(n.buf)
		if errors.Is(err, unix.ENOBUFS) {
			return nil, ErrLost
		}
		if err != nil {
			return nil, err
		}
		u, err := ParseUevent(n.buf[:k])
		if err != nil {
			continue // not a kernel event (cannot happen on group 1); skip it
		}
		return u, nil
	}
}

func (n *netlinkUevents) Close() error { return n.f.Close() }
