package imaging

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/esxi-rescue/rescue/internal/zeros"
)

// zeroMode says how a target handles an all-zero region.
type zeroMode int

const (
	zeroSkip    zeroMode = iota // fresh file (holes) or AssumeZeroed
	zeroPunch                   // existing file: punch a hole
	zeroBlkZero                 // block device: BLKZEROOUT
	zeroWrite                   // write zeros (fallback)
)

// rawSink writes image bytes at their offsets into a file or block device.
type rawSink struct {
	f           *os.File
	direct      *os.File // the same device opened with O_DIRECT, for aligned writes (nil: none)
	name        string
	limit       int64 // bytes that fit (-1: a file that grows)
	mode        zeroMode
	minZero     int  // smallest zero run handled as a zero region
	gran        int  // zero detection granularity
	noLimitData bool // data past limit is an error (no GPT tells us it is unused)
	// q, when set (a block device with O_DIRECT), takes the aligned data
	// writes and the zeroing asynchronously, directWriters at a time;
	// keep is the pipeline's hold on the current chunk (see keeper).
	q    *ioQueue
	keep func() func()
	// pos is the end of the stream handled so far (see frontier).
	pos atomic.Int64

	dataBytes, zeroBytes, discarded int64
	directBytes                     int64      // of dataBytes, written with O_DIRECT (without q)
	end                             int64      // highest offset+len seen
	pending                         [][2]int64 // ranges whose writeback was started
	inflight                        int64      // bytes in pending
	sums                            *writeSums // what was written, for -verify (nil: no verify)
	wlo, whi                        int64      // the range written to (zeroed, punched or written), when whi > 0
}

// touched records that [off, off+n) of the target was written to.
func (s *rawSink) touched(off, n int64) {
	if s.whi == 0 || off < s.wlo {
		s.wlo = off
	}
	s.whi = max(s.whi, off+n)
}

// written returns the range [lo, hi) of the target written to so far.
func (s *rawSink) written() (lo, hi int64, ok bool) {
	return s.wlo, s.whi, s.whi > 0
}

// data writes image bytes b at off (a consumer): all-zero runs of at least
// minZero bytes become zero regions.
func (s *rawSink) data(b []byte, off int64) error {
	if e := off + int64(len(b)); e > s.end {
		s.end = e
	}
	if s.limit >= 0 && off+int64(len(b)) > s.limit {
		keep := max(s.limit-off, 0)
		past := b[keep:]
		if s.noLimitData && !zeros.Is(past) {
			return fmt.Errorf("%w: %s is too small: the image has data at byte %d, past its end (%d bytes)", ErrRefused, s.name, off+keep, s.limit)
		}
		s.discarded += int64(len(past))
		b = b[:keep]
	}
	if len(b) == 0 {
		return nil
	}
	if s.sums != nil {
		s.sums.add(b, off)
	}
	g := s.gran
	dataStart := 0
	pos := 0
	for pos < len(b) {
		end := min(pos+g, len(b))
		if !zeros.Is(b[pos:end]) {
			pos = end
			continue
		}
		zend := end
		for zend < len(b) {
			e := min(zend+g, len(b))
			if !zeros.Is(b[zend:e]) {
				break
			}
			zend = e
		}
		if zend-pos >= s.minZero {
			if err := s.writeData(b[dataStart:pos], off+int64(dataStart)); err != nil {
				return err
			}
			if err := s.zeroRange(off+int64(pos), int64(zend-pos)); err != nil {
				return err
			}
			dataStart = zend
		}
		pos = zend
	}
	if err := s.writeData(b[dataStart:], off+int64(dataStart)); err != nil {
		return err
	}
	if s.direct == nil {
		s.writeback(off, int64(len(b)))
	}
	s.handled(off + int64(len(b)))
	return nil
}

// handled records that the stream up to end was handed to the target, and
// wakes the background verifier.
func (s *rawSink) handled(end int64) {
	if end > s.pos.Load() {
		s.pos.Store(end)
	}
	if s.sums != nil {
		s.sums.poke()
	}
}

// frontier returns the offset below which everything handed to the sink
// was written to the target (a block device's queued writes done, a
// file's in its page cache at least), zeroed or skipped: what -verify may
// read back (it waits for the writeback of a range before reading it, so
// it reads the medium, see verifier.readAt). It may be called from any
// goroutine.
func (s *rawSink) frontier() int64 {
	f := s.pos.Load()
	if s.q != nil {
		f = min(f, s.q.low())
	}
	return f
}

// directAlign is the alignment of O_DIRECT writes (buffer, offset and
// length): 4096 suits 512-byte and 4Kn devices alike.
const directAlign = 4096

// aligned says whether b at off can be written with O_DIRECT.
func aligned(b []byte, off int64) bool {
	return len(b) > 0 && off%directAlign == 0 && len(b)%directAlign == 0 &&
		uintptr(unsafe.Pointer(&b[0]))%directAlign == 0
}

// zero handles n zero bytes of the image at off that were never read (a
// consumer): a hole, BLKZEROOUT or nothing, as the target needs.
func (s *rawSink) zero(off, n int64) error {
	if e := off + n; e > s.end {
		s.end = e
	}
	if s.limit >= 0 && off+n > s.limit {
		keep := max(s.limit-off, 0)
		s.discarded += n - keep
		n = keep
	}
	if n <= 0 {
		return nil
	}
	if s.sums != nil {
		s.sums.addZero(off, n)
	}
	if err := s.zeroRange(off, n); err != nil {
		return err
	}
	s.handled(off + n)
	return nil
}

func (s *rawSink) setKeep(keep func() func()) { s.keep = keep }

// startQueue makes the sink write through an ioQueue (a block device
// opened with O_DIRECT); wait must be called before anything reads the
// target or writes the held-back ranges.
func (s *rawSink) startQueue() {
	if s.direct != nil && s.q == nil {
		s.q = newIOQueue(s.f, s.direct, s.name)
		s.q.done = func(int64, int64) {
			if s.sums != nil {
				s.sums.poke()
			}
		}
	}
}

// wait waits for the queued writes and returns the first error.
func (s *rawSink) wait() error {
	if s.q == nil {
		return nil
	}
	return s.q.wait()
}

// directWritten is how many bytes went to the target with O_DIRECT.
func (s *rawSink) directWritten() int64 {
	n := s.directBytes
	if s.q != nil {
		n += s.q.direct64.Load()
	}
	return n
}

func (s *rawSink) writeData(b []byte, off int64) error {
	if len(b) == 0 {
		return nil
	}
	s.touched(off, int64(len(b)))
	// An aligned piece that ends unaligned (before a held-back sector)
	// goes out direct up to its last whole block, the rest through f.
	if s.q != nil && len(b) > directAlign && !aligned(b, off) {
		if k := len(b) &^ (directAlign - 1); aligned(b[:k], off) {
			if err := s.writeData(b[:k], off); err != nil {
				return err
			}
			b, off = b[k:], off+int64(k)
		}
	}
	if s.q != nil && aligned(b, off) {
		s.dataBytes += int64(len(b))
		if s.keep != nil && s.q.reqs != nil {
			return s.q.submit(ioReq{b: b, off: off, drop: s.keep()})
		}
		return s.q.write(b, off)
	}
	if s.direct != nil && aligned(b, off) {
		_, err := s.direct.WriteAt(b, off)
		if err == nil {
			s.dataBytes += int64(len(b))
			s.directBytes += int64(len(b))
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("writing %s at byte %d: %w", s.name, off, unwrapPath(err))
		}
		// The device or its driver does not take these direct writes.
		s.direct = nil
	}
	if _, err := s.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("writing %s at byte %d: %w", s.name, off, unwrapPath(err))
	}
	s.dataBytes += int64(len(b))
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (s *rawSink) zeroRange(off, n int64) error {
	s.zeroBytes += n
	if s.mode != zeroSkip {
		s.touched(off, n)
	}
	switch s.mode {
	case zeroSkip:
		return nil
	case zeroPunch:
		err := unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("punching a hole in %s at byte %d: %w", s.name, off, err)
		}
		s.mode = zeroWrite
	case zeroBlkZero:
		if s.q != nil && s.q.reqs != nil && off%directAlign == 0 && n%directAlign == 0 {
			return s.q.submit(ioReq{off: off, n: n})
		}
		if s.q != nil {
			return s.q.zeroOut(off, n)
		}
		// BLKZEROOUT needs 512-byte alignment; write the odd tail by hand.
		a := n &^ 511
		if off%512 == 0 && a > 0 {
			r := [2]uint64{uint64(off), uint64(a)}
			_, _, e := unix.Syscall(unix.SYS_IOCTL, s.f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0])))
			if e == 0 {
				if a == n {
					return nil
				}
				return s.writeZeros(off+a, n-a)
			}
			if e != syscall.EOPNOTSUPP && e != syscall.ENOTTY && e != syscall.EINVAL {
				return fmt.Errorf("zeroing %s at byte %d (BLKZEROOUT): %w", s.name, off, e)
			}
			s.mode = zeroWrite
		}
	}
	return s.writeZeros(off, n)
}

func (s *rawSink) writeZeros(off, n int64) error {
	if err := zeros.WriteAt(s.f, off, n); err != nil {
		return fmt.Errorf("%s: %w", s.name, unwrapPath(err))
	}
	return nil
}

// writebackLag is how much written data may still be in flight (dirty or
// under writeback) before write waits for it.
const writebackLag = 128 << 20

// writeback starts writeback of what was just written and waits for data
// written writebackLag bytes earlier, so the page cache holds a bounded
// amount of dirty data, the disk queue stays deep, and the progress shown
// is close to what reached the disk instead of stalling in the final fsync.
func (s *rawSink) writeback(off, n int64) {
	fd := int(s.f.Fd())
	_ = unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE)
	s.pending = append(s.pending, [2]int64{off, n})
	s.inflight += n
	for s.inflight > writebackLag && len(s.pending) > 1 {
		r := s.pending[0]
		s.pending = s.pending[1:]
		s.inflight -= r[1]
		_ = unix.SyncFileRange(fd, r[0], r[1],
			unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	}
}

// fadviseDontNeed drops f's cached pages so a read-back comes from the disk.
func fadviseDontNeed(f *os.File) error {
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
