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
// configured by the caller; tundelay runs until it is killed. It is a
// bench tool, not part of the rescue system.
//
// What it emulates: a wide-area path of fixed delay and no loss, whose
// rate (without -rate) is limited only by what the machine can move, as a
// fast WAN is limited by the TCP window over its round trip rather than
// by its links. For that, tundelay must deliver every packet on time: a
// packet it is late with lengthens the round trip of its flow as a queue
// in a router would. Measured on the bench machine (2 CPUs, load 24 from
// other work): run as an ordinary process, 45-60% of the packets were
// delivered more than 1 ms late (mean 8-10 ms, worst 80-340 ms) and the
// TCP round trip of a 20 ms link read 35-170 ms; run with real-time
// priority (chrt -f, as bench/net.sh does when it can), 5-15% were late
// (worst 36 ms) and the round trip read 21-30 ms. Its own ceiling is not
// the limit: with -delay 0 the path moved 300-350 MB/s on that machine,
// against 50-130 MB/s for one stream over 20 ms (the window: tcp_wmem's
// 4 MiB over the round trip). Without a rate limit the emulated link is
// thus "as fast as this machine", and the round trip what tundelay
// measured (it counts packets delivered more than 1 ms late and prints
// the counts when killed, or every -report).
//
// -queues N opens N queues per device (IFF_MULTI_QUEUE; create the
// devices with "multi_queue"), each with its own reader and writer: the
// kernel spreads flows over them by hash. Measured on 2 CPUs it was no
// better (more threads than CPUs; a flow moved between queues is
// reordered), so the default is one.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	var (
		nsA    = flag.String("a", "", "first network namespace (ip netns name)")
		nsB    = flag.String("b", "", "second network namespace")
		dev    = flag.String("dev", "tun0", "TUN device name in both namespaces")
		delay  = flag.Duration("delay", 10*time.Millisecond, "one-way delay added to every packet")
		rate   = flag.Float64("rate", 0, "link rate in Mbit/s per direction (0: as fast as tundelay goes)")
		queue  = flag.Duration("queue", 5*time.Millisecond, "with -rate: drop packets that would wait longer than this (the bottleneck's buffer)")
		queues = flag.Int("queues", 1, "TUN queues per device, each with a reader and a writer per direction (the device must be multi_queue when > 1)")
		report = flag.Duration("report", 0, "print the late-packet counts this often (0: only when killed)")
	)
	flag.Parse()
	if *nsA == "" || *nsB == "" {
		fmt.Fprintln(os.Stderr, "usage: tundelay -a NSA -b NSB [-dev tun0] [-delay 10ms] [-rate MBIT] [-queue 5ms]")
		os.Exit(2)
	}
	a, err := openTun(*nsA, *dev, *queues)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tundelay:", err)
		os.Exit(2)
	}
	b, err := openTun(*nsB, *dev, *queues)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tundelay:", err)
		os.Exit(2)
	}
	ab := &link{name: *nsA + "->" + *nsB, delay: *delay, rate: *rate, queue: *queue}
	ba := &link{name: *nsB + "->" + *nsA, delay: *delay, rate: *rate, queue: *queue}
	for i := range a {
		go ab.forward(a[i], b[i])
		go ba.forward(b[i], a[i])
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGTERM, unix.SIGINT)
	var tick <-chan time.Time
	if *report > 0 {
		tick = time.Tick(*report)
	}
	for {
		select {
		case <-tick:
			ab.print()
			ba.print()
		case <-sig:
			ab.print()
			ba.print()
			os.Exit(0)
		}
	}
}

// link is one direction: its delay, its optional rate limit (shared by
// its queues, as one wire) and its counters.
type link struct {
	name         string
	delay, queue time.Duration
	rate         float64
	mu           sync.Mutex
	free         time.Time // when the wire has sent what it holds (with rate)
	packets      atomic.Int64
	bytes        atomic.Int64
	late         atomic.Int64 // delivered more than 1 ms after due
	lateNs       atomic.Int64 // their lateness, summed
	maxLate      atomic.Int64
	drops        atomic.Int64
}

func (l *link) print() {
	n, late := l.packets.Load(), l.late.Load()
	avg := time.Duration(0)
	if late > 0 {
		avg = time.Duration(l.lateNs.Load() / late)
	}
	fmt.Printf("tundelay %s: %d packets, %d bytes, %d late by > 1ms (%.1f%%, mean %v, max %v), %d dropped by the rate limit\n",
		l.name, n, l.bytes.Load(), late, 100*float64(late)/float64(max(n, 1)), avg.Round(10*time.Microsecond),
		time.Duration(l.maxLate.Load()).Round(10*time.Microsecond), l.drops.Load())
}

// openTun attaches to the TUN device dev of namespace ns: queues queues.
func openTun(ns, dev string, queues int) ([]*os.File, error) {
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
	var fs []*os.File
	for i := 0; i < max(queues, 1); i++ {
		f, err := openQueue(dev, ns, queues > 1)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// openQueue opens one queue of dev (in the thread's namespace).
func openQueue(dev, ns string, multi bool) (*os.File, error) {
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
	if multi {
		req.flags |= unix.IFF_MULTI_QUEUE
	}
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

// bufSize holds the largest packet a TUN device hands over: a 64 KiB
// TSO segment (IP length up to 65535) after its virtio-net header.
const bufSize = 65535 + 64

var pool = sync.Pool{New: func() any { return make([]byte, bufSize) }}

// forward copies packets from src to dst, each delivered delay after it
// arrived (after its turn on a link of rate Mbit/s, when rate > 0). The
// writer runs on a thread of its own: the write is where the receiving
// namespace's stack processes the packet.
func (l *link) forward(src, dst *os.File) {
	q := make(chan packet, 1<<16)
	go func() {
		runtime.LockOSThread()
		for p := range q {
			if d := time.Until(p.at); d > 0 {
				time.Sleep(d)
			} else if -d > time.Millisecond {
				l.late.Add(1)
				l.lateNs.Add(int64(-d))
				for m := l.maxLate.Load(); int64(-d) > m && !l.maxLate.CompareAndSwap(m, int64(-d)); m = l.maxLate.Load() {
				}
			}
			dst.Write(p.buf)
			l.packets.Add(1)
			l.bytes.Add(int64(len(p.buf)))
			pool.Put(p.buf[:cap(p.buf)])
		}
	}()
	runtime.LockOSThread()
	for {
		buf := pool.Get().([]byte)
		n, err := src.Read(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tundelay:", err)
			os.Exit(1)
		}
		at := time.Now()
		if l.rate > 0 {
			l.mu.Lock()
			if l.free.Before(at) {
				l.free = at
			}
			if l.free.Sub(at) > l.queue {
				l.mu.Unlock()
				l.drops.Add(1)
				pool.Put(buf) // the bottleneck's buffer is full: drop
				continue
			}
			l.free = l.free.Add(time.Duration(float64(n*8) / (l.rate * 1e6) * float64(time.Second)))
			at = l.free
			l.mu.Unlock()
		}
		select {
		case q <- packet{at.Add(l.delay), buf[:n]}:
		default:
			l.drops.Add(1)
			pool.Put(buf)
		}
	}
}
