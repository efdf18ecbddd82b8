// Command tundelay is the bench's slow link: it joins two network
// namespaces through a TUN device in each and delays every IP packet by
// -delay in each direction, as `tc qdisc add ... netem delay` would on
// kernels that have netem (the bench's does not: CONFIG_NET_SCH_NETEM is
// off there). With -rate it also serialises the packets at that rate
// behind a drop-tail queue of -queue, as a bottleneck link does.
//
//	tundelay -a NSA -b NSB -dev tun0 -delay 10ms [-rate 1000] [-queue 2ms]
//
// The TUN devices must exist (ip -n NS tuntap add tun0 mode tun) and be
// configured by the caller; tundelay runs until it is killed. It is a bench
// tool, not part of the rescue system.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	var (
		nsA   = flag.String("a", "", "first network namespace (ip netns name)")
		nsB   = flag.String("b", "", "second network namespace")
		dev   = flag.String("dev", "tun0", "TUN device name in both namespaces")
		delay = flag.Duration("delay", 10*time.Millisecond, "one-way delay added to every packet")
		rate  = flag.Float64("rate", 0, "link rate in Mbit/s per direction (0: as fast as tundelay goes)")
		queue = flag.Duration("queue", 5*time.Millisecond, "with -rate: drop packets that would wait longer than this (the bottleneck's buffer)")
	)
	flag.Parse()
	if *nsA == "" || *nsB == "" {
		fmt.Fprintln(os.Stderr, "usage: tundelay -a NSA -b NSB [-dev tun0] [-delay 10ms] [-rate MBIT] [-queue 5ms]")
		os.Exit(2)
	}
	a, err := openTun(*nsA, *dev)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tundelay:", err)
		os.Exit(2)
	}
	b, err := openTun(*nsB, *dev)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tundelay:", err)
		os.Exit(2)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); forward(a, b, *delay, *rate, *queue) }()
	go func() { defer wg.Done(); forward(b, a, *delay, *rate, *queue) }()
	wg.Wait()
}

// openTun attaches to the TUN device dev of namespace ns.
func openTun(ns, dev string) (*os.File, error) {
	runtime.LockOSThread() // the thread's namespace changes for a moment
	defer runtime.UnlockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, err
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("setns %s: %w", ns, err)
	}
	defer unix.Setns(int(self.Fd()), unix.CLONE_NEWNET)
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:], dev)
	// With a virtio-net header and offloads the kernel hands over TCP
	// segments of up to 64 KiB (TSO/GSO, as a real NIC's driver gets them)
	// and takes them back whole (as after GRO): the MTU and MSS stay 1500
	// and 1448, but tundelay moves far fewer packets.
	req.flags = unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s in %s: %w", dev, ns, e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETOFFLOAD %s in %s: %w", dev, ns, e)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), dev), nil // non-blocking: Go's poller
}

type packet struct {
	at  time.Time
	buf []byte
}

// forward copies packets from src to dst, each delivered delay after it
// arrived (after its turn on a link of rate Mbit/s, when rate > 0).
func forward(src, dst *os.File, delay time.Duration, rate float64, queue time.Duration) {
	q := make(chan packet, 1<<16)
	pool := sync.Pool{New: func() any { return make([]byte, 65536) }}
	go func() {
		for p := range q {
			if d := time.Until(p.at); d > 0 {
				time.Sleep(d)
			}
			dst.Write(p.buf)
			pool.Put(p.buf[:cap(p.buf)])
		}
	}()
	var free time.Time // when the link has sent what it holds
	for {
		buf := pool.Get().([]byte)
		n, err := src.Read(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tundelay:", err)
			os.Exit(1)
		}
		now := time.Now()
		at := now
		if rate > 0 {
			if free.Before(now) {
				free = now
			}
			if free.Sub(now) > queue {
				pool.Put(buf) // the bottleneck's buffer is full: drop
				continue
			}
			free = free.Add(time.Duration(float64(n*8) / (rate * 1e6) * float64(time.Second)))
			at = free
		}
		select {
		case q <- packet{at.Add(delay), buf[:n]}:
		default:
			pool.Put(buf)
		}
	}
}
