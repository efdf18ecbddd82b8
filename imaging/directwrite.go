package imaging

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/esxi-rescue/rescue/internal/zeros"
)

// directWriters is how many writes a block device target has in flight:
// each is a pwrite of up to one pipeline buffer (4 MiB) at its own offset
// or a BLKZEROOUT, so the device queue stays full while the next buffer
// is read and hashed. Plain goroutines with pwrite need no library and
// reach the device's limit on loop devices and disks alike (io_uring would
// save only the goroutine switches, a few per 4 MiB).
const directWriters = 4

// directBuffers is the pipeline depth of a restore onto a block device:
// directWriters buffers in flight to the device, plus the one being read
// and the ones being hashed (8 x 4 MiB: peak RSS stays under 64 MiB).
const directBuffers = 8

// keeper is a consumer that may go on using a chunk's bytes after its
// data call returned (an asynchronous write): before each chunk the
// pipeline hands it keep, which takes one more reference on the chunk and
// returns the function dropping it; nil (for bytes not from the pipeline)
// means data must be done with b when it returns.
type keeper interface {
	setKeep(keep func() (drop func()))
}

// ioReq is one asynchronous write: b at off (O_DIRECT), or n zero bytes
// at off (BLKZEROOUT) when b is nil.
type ioReq struct {
	b    []byte
	off  int64
	n    int64
	drop func() // releases b's chunk (nil: none)
}

// ioQueue runs a block device's data writes and zeroing on directWriters
// goroutines. Writes go to distinct offsets (the stream never writes a
// range twice before the held-back head), so their order does not matter;
// wait returns once all are done, and the first error stops the rest.
type ioQueue struct {
	f, direct *os.File
	name      string
	reqs      chan ioReq
	wg        sync.WaitGroup
	mu        sync.Mutex
	err       error
	failed    atomic.Bool
	noDirect  atomic.Bool // the device refused a direct write (EINVAL): buffered from then on
	noZeroOut atomic.Bool // BLKZEROOUT is not supported: zeros are written
	direct64  atomic.Int64
	// done, when set, is called after each request completed successfully.
	done func(off, n int64)
	// inflight tracks the offsets being written, for the completed
	// frontier (see low).
	flmu     sync.Mutex
	inflight map[int64]int64
}

func newIOQueue(f, direct *os.File, name string) *ioQueue {
	q := &ioQueue{f: f, direct: direct, name: name, reqs: make(chan ioReq), inflight: map[int64]int64{}}
	for range directWriters {
		q.wg.Add(1)
		go q.run()
	}
	return q
}

func (q *ioQueue) run() {
	defer q.wg.Done()
	for r := range q.reqs {
		var err error
		if !q.failed.Load() {
			if r.b != nil {
				err = q.write(r.b, r.off)
			} else {
				err = q.zeroOut(r.off, r.n)
			}
		}
		if err != nil {
			q.fail(err)
		}
		if r.drop != nil {
			r.drop()
		}
		n := r.n
		if r.b != nil {
			n = int64(len(r.b))
		}
		q.flmu.Lock()
		delete(q.inflight, r.off)
		q.flmu.Unlock()
		if err == nil && q.done != nil {
			q.done(r.off, n)
		}
	}
}

func (q *ioQueue) fail(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
	q.failed.Store(true)
}

// firstErr returns the first error of a request, if any.
func (q *ioQueue) firstErr() error {
	if !q.failed.Load() {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// submit queues r; it returns an earlier request's error, if any.
func (q *ioQueue) submit(r ioReq) error {
	if err := q.firstErr(); err != nil {
		if r.drop != nil {
			r.drop()
		}
		return err
	}
	n := r.n
	if r.b != nil {
		n = int64(len(r.b))
	}
	q.flmu.Lock()
	q.inflight[r.off] = n
	q.flmu.Unlock()
	q.reqs <- r
	return nil
}

// low returns the lowest offset of a request still in flight
// (math.MaxInt64: none).
func (q *ioQueue) low() int64 {
	q.flmu.Lock()
	defer q.flmu.Unlock()
	lo := int64(math.MaxInt64)
	for off := range q.inflight {
		lo = min(lo, off)
	}
	return lo
}

// wait waits for every queued request and stops the writers; it returns
// the first error.
func (q *ioQueue) wait() error {
	if q.reqs != nil {
		close(q.reqs)
		q.wg.Wait()
		q.reqs = nil
	}
	return q.firstErr()
}

func (q *ioQueue) write(b []byte, off int64) error {
	if !q.noDirect.Load() {
		_, err := q.direct.WriteAt(b, off)
		if err == nil {
			q.direct64.Add(int64(len(b)))
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("writing %s at byte %d: %w", q.name, off, unwrapPath(err))
		}
		// The device or its driver does not take these direct writes.
		q.noDirect.Store(true)
	}
	if _, err := q.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("writing %s at byte %d: %w", q.name, off, unwrapPath(err))
	}
	return nil
}

// zeroOut zeros [off, off+n) with BLKZEROOUT (the kernel uses the
// device's write-zeroes or unmap-with-zeroing command where it has one,
// else writes zero pages), the odd tail and unsupported devices by
// writing zeros.
func (q *ioQueue) zeroOut(off, n int64) error {
	if a := n &^ 511; !q.noZeroOut.Load() && off%512 == 0 && a > 0 {
		r := [2]uint64{uint64(off), uint64(a)}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, q.f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0])))
		if e == 0 {
			if a == n {
				return nil
			}
			off, n = off+a, n-a
		} else if e != syscall.EOPNOTSUPP && e != syscall.ENOTTY && e != syscall.EINVAL {
			return fmt.Errorf("zeroing %s at byte %d (BLKZEROOUT): %w", q.name, off, e)
		} else {
			q.noZeroOut.Store(true)
		}
	}
	if err := zeros.WriteAt(q.f, off, n); err != nil {
		return fmt.Errorf("%s: %w", q.name, unwrapPath(err))
	}
	return nil
}
