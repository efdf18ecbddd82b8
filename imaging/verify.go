package imaging

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

// sumGroup is the largest data region summed as one for -verify: small
// enough to say where a mismatch is, large enough to keep the table small.
// sumUnit is the granularity at which zero and data regions are told
// apart (4 MiB: at most 512k regions, 16 MiB of table, for 2 TB).
const (
	sumGroup = 64 << 20
	sumUnit  = 4 << 20
)

// region is one contiguous written range and a digest of its content.
type region struct {
	off, n int64
	zero   bool   // every byte written there was zero
	sum    uint64 // maphash of the content when not zero
}

// writeSums records what a restore wrote, region by region, so -verify can
// read it back and compare without hashing the whole image a second time:
// all-zero regions (most of a typical disk) are checked to read back as
// zeros (or to be holes), the others by a seeded 64-bit hash.
//
// The read-back proves the medium, not the page cache: it reads with
// O_DIRECT where the target takes it (block devices, most filesystems),
// else after fsync, BLKFLSBUF and FADV_DONTNEED. While the restore runs, a
// background goroutine (start) already reads back every region that is
// complete and whose writes have finished (the sink's frontier), so
// region N is verified while N+1 is written; verify then checks the rest.
type writeSums struct {
	seed    maphash.Seed
	mu      sync.Mutex // guards regions and cur against the background verifier
	regions []region
	cur     *region
	h       maphash.Hash

	bg *bgVerify // nil when no background verifier runs
}

// bgVerify is the background verifier's state.
type bgVerify struct {
	kick     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	next     int   // regions before next are verified (read after done)
	err      error // its first error (read after done)
	bytes    int64 // bytes it verified
	frontier func() int64
}

func newWriteSums() *writeSums {
	w := &writeSums{seed: maphash.MakeSeed()}
	w.h.SetSeed(w.seed)
	return w
}

// verifyHook, when set (tests), is called before a data region is read back.
var verifyHook func(off, n int64)

// add records b written at off.
func (w *writeSums) add(b []byte, off int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(b) > 0 {
		k := min(int64(len(b)), sumUnit-off%sumUnit)
		part := b[:k]
		zero := zeros.Is(part)
		if w.cur == nil || w.cur.off+w.cur.n != off || w.cur.zero != zero || (!zero && w.cur.n >= sumGroup) {
			w.flush()
			w.regions = append(w.regions, region{off: off, zero: zero})
			w.cur = &w.regions[len(w.regions)-1]
			w.h.Reset()
		}
		if !zero {
			w.h.Write(part)
		}
		w.cur.n += k
		off += k
		b = b[k:]
	}
}

// addZero records n zero bytes written at off.
func (w *writeSums) addZero(off, n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur == nil || w.cur.off+w.cur.n != off || !w.cur.zero {
		w.flush()
		w.regions = append(w.regions, region{off: off, zero: true})
		w.cur = &w.regions[len(w.regions)-1]
	}
	w.cur.n += n
}

// flush closes the current region; w.mu is held.
func (w *writeSums) flush() {
	if w.cur != nil {
		w.cur.sum = w.h.Sum64()
		w.cur = nil
	}
}

// closed returns region i if it is complete (the writer moved past it).
func (w *writeSums) closed(i int) (region, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i >= len(w.regions) || (w.cur != nil && i == len(w.regions)-1) {
		return region{}, false
	}
	return w.regions[i], true
}

// readBack reads a target back for -verify, past the page cache.
type readBack struct {
	f      *os.File // the target as restored
	direct *os.File // the same opened O_RDONLY|O_DIRECT (nil: none)
	buf    []byte   // aligned
}

// openReadBack opens path again with O_DIRECT for reading back f.
func openReadBack(f *os.File, path string, bufSize int) *readBack {
	rb := &readBack{f: f, buf: alignedBuf(bufSize + directAlign)}
	if d, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		rb.direct = d
	}
	return rb
}

func (rb *readBack) close() {
	if rb.direct != nil {
		rb.direct.Close()
		rb.direct = nil
	}
}

// readAt returns the k <= len(buf)-directAlign bytes at off, read with
// O_DIRECT through the aligned block envelope around them when possible.
func (rb *readBack) readAt(off int64, k int64) ([]byte, error) {
	if rb.direct != nil {
		a0 := off &^ (directAlign - 1)
		a1 := (off + k + directAlign - 1) &^ (directAlign - 1)
		m, err := rb.direct.ReadAt(rb.buf[:a1-a0], a0)
		if int64(m) >= off+k-a0 {
			return rb.buf[off-a0 : off-a0+k], nil
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, unix.EINVAL) {
			return nil, err
		}
		// Refused (alignment) or short: read through the page cache,
		// flushed and dropped first.
		rb.close()
		dropCache(rb.f)
	}
	m, err := rb.f.ReadAt(rb.buf[:k], off)
	if err != nil && !(errors.Is(err, io.EOF) && int64(m) == k) {
		return nil, err
	}
	return rb.buf[:k], nil
}

// dropCache flushes f and drops its cached pages, so reads come from the medium.
func dropCache(f *os.File) {
	fd := int(f.Fd())
	_ = unix.Fsync(fd)
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	_, _ = unix.IoctlRetInt(fd, unix.BLKFLSBUF)
}

// start runs the background verifier: it reads back, in order, each
// complete region that ends at or below frontier() (everything before
// the frontier has reached the target), woken by kick.
func (w *writeSums) start(ctx context.Context, rb *readBack, frontier func() int64) {
	bg := &bgVerify{kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), frontier: frontier}
	w.bg = bg
	go func() {
		defer close(bg.done)
		defer rb.close()
		var h maphash.Hash
		h.SetSeed(w.seed)
		for {
			for {
				r, ok := w.closed(bg.next)
				if !ok || r.off+r.n > bg.frontier() {
					break
				}
				if err := verifyRegion(ctx, rb, &h, r, nil); err != nil {
					bg.err = err
					return
				}
				bg.next++
				bg.bytes += r.n
			}
			select {
			case <-bg.kick:
			case <-bg.quit:
				return
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
}

// stop stops the background verifier, if any, and returns its state.
func (w *writeSums) stop() *bgVerify {
	bg := w.bg
	if bg == nil {
		return nil
	}
	close(bg.quit)
	<-bg.done
	w.bg = nil
	return bg
}

// poke wakes the background verifier, if any.
func (w *writeSums) poke() {
	if w.bg != nil {
		select {
		case w.bg.kick <- struct{}{}:
		default:
		}
	}
}

// verify reads the recorded regions from index from on back from f and
// compares; it returns the index past the last region checked. The
// background verifier, if running, is stopped first and what it checked
// is not read again.
func (w *writeSums) verify(ctx context.Context, opt *Options, f *os.File, path string, bufSize int, from int) (int, error) {
	var early int64
	if bg := w.stop(); bg != nil {
		if bg.err != nil {
			return from, bg.err
		}
		from = max(from, bg.next)
		early = bg.bytes
	}
	w.mu.Lock()
	w.flush()
	regions := w.regions[from:]
	next := len(w.regions)
	w.mu.Unlock()
	if err := w.verifyRegions(ctx, opt, f, path, bufSize, regions, early); err != nil {
		return from, err
	}
	return next, nil
}

func (w *writeSums) verifyRegions(ctx context.Context, opt *Options, f *os.File, path string, bufSize int, regions []region, early int64) error {
	rb := openReadBack(f, path, bufSize)
	defer rb.close()
	if rb.direct == nil {
		dropCache(f)
	}
	var total int64
	for _, r := range regions {
		total += r.n
	}
	if early > 0 {
		opt.logf("verifying: reading back %s (%s were read back while writing)", gpt.HumanBytes(total), gpt.HumanBytes(early))
	} else {
		opt.logf("verifying: reading back %s", gpt.HumanBytes(total))
	}
	var done atomic.Int64
	stop := startProgress(opt, "verify", total, done.Load)
	defer stop()
	var h maphash.Hash
	h.SetSeed(w.seed)
	for _, r := range regions {
		if err := verifyRegion(ctx, rb, &h, r, &done); err != nil {
			return err
		}
	}
	return nil
}

// verifyRegion reads region r back and compares it with what was written.
func verifyRegion(ctx context.Context, rb *readBack, h *maphash.Hash, r region, done *atomic.Int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	count := func(n int64) {
		if done != nil {
			done.Add(n)
		}
	}
	if r.zero && isHole(int(rb.f.Fd()), r.off, r.n) {
		count(r.n)
		return nil
	}
	if !r.zero && verifyHook != nil {
		verifyHook(r.off, r.n)
	}
	h.Reset()
	step := int64(len(rb.buf) - directAlign)
	for off := r.off; off < r.off+r.n; {
		k := min(step, r.off+r.n-off)
		b, err := rb.readAt(off, k)
		if err != nil {
			return fmt.Errorf("verify: reading back at byte %d: %w", off, unwrapPath(err))
		}
		if r.zero {
			if i := zeros.First(b); i >= 0 {
				return fmt.Errorf("%w: bytes %d-%d should read back as zeros but byte %d does not (the medium does not hold what was written)", ErrVerify, off, off+k-1, off+int64(i))
			}
		} else {
			h.Write(b)
		}
		off += k
		count(k)
	}
	if !r.zero && h.Sum64() != r.sum {
		return fmt.Errorf("%w: bytes %d-%d read back from the medium differ from what was written", ErrVerify, r.off, r.off+r.n-1)
	}
	return nil
}

// isHole reports whether [off, off+n) of a file is one hole (reads as
// zeros without data); false when unknown (block devices, no SEEK_DATA).
func isHole(fd int, off, n int64) bool {
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true
	}
	return err == nil && data >= off+n
}
