package imaging

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"sync/atomic"

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
type writeSums struct {
	seed    maphash.Seed
	regions []region
	cur     *region
	h       maphash.Hash
}

func newWriteSums() *writeSums {
	w := &writeSums{seed: maphash.MakeSeed()}
	w.h.SetSeed(w.seed)
	return w
}

// add records b written at off.
func (w *writeSums) add(b []byte, off int64) {
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
	if w.cur == nil || w.cur.off+w.cur.n != off || !w.cur.zero {
		w.flush()
		w.regions = append(w.regions, region{off: off, zero: true})
		w.cur = &w.regions[len(w.regions)-1]
	}
	w.cur.n += n
}

func (w *writeSums) flush() {
	if w.cur != nil {
		w.cur.sum = w.h.Sum64()
		w.cur = nil
	}
}

// verify reads the recorded regions from index from on back from f and
// compares; it returns the index past the last region checked.
func (w *writeSums) verify(ctx context.Context, opt *Options, f *os.File, bufSize int, from int) (int, error) {
	w.flush()
	next := len(w.regions)
	if err := w.verifyRegions(ctx, opt, f, bufSize, w.regions[from:]); err != nil {
		return from, err
	}
	return next, nil
}

func (w *writeSums) verifyRegions(ctx context.Context, opt *Options, f *os.File, bufSize int, regions []region) error {
	fd := int(f.Fd())
	_ = unix.Fsync(fd)
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	_, _ = unix.IoctlRetInt(fd, unix.BLKFLSBUF)
	var total int64
	for _, r := range regions {
		total += r.n
	}
	opt.logf("verifying: reading back %s", gpt.HumanBytes(total))
	var done atomic.Int64
	stop := startProgress(opt, "verify", total, done.Load)
	defer stop()
	buf := alignedBuf(bufSize)
	var h maphash.Hash
	h.SetSeed(w.seed)
	for _, r := range regions {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.zero && isHole(fd, r.off, r.n) {
			done.Add(r.n)
			continue
		}
		h.Reset()
		for off := r.off; off < r.off+r.n; {
			k := min(int64(len(buf)), r.off+r.n-off)
			m, err := f.ReadAt(buf[:k], off)
			if err != nil && !(errors.Is(err, io.EOF) && int64(m) == k) {
				return fmt.Errorf("verify: reading back at byte %d: %w", off, err)
			}
			if r.zero {
				if !zeros.Is(buf[:k]) {
					return fmt.Errorf("%w: bytes %d-%d should read back as zeros but do not", ErrVerify, off, off+k-1)
				}
			} else {
				h.Write(buf[:k])
			}
			off += k
			done.Add(k)
		}
		if !r.zero && h.Sum64() != r.sum {
			return fmt.Errorf("%w: bytes %d-%d read back differ from what was written", ErrVerify, r.off, r.off+r.n-1)
		}
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
