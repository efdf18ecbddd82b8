package imaging

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
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
// hashUnit is the piece of a data region hashed on its own (with its
// offset): a region's sum is the sum of its pieces' hashes, so the
// read-back checks pieces in any order, several at a time, and as soon as
// each piece is written, without waiting for its region to end.
const (
	sumGroup = 64 << 20
	sumUnit  = 4 << 20
	hashUnit = 1 << 20
)

// verifyReaders is how many read-backs -verify has in flight, each of up
// to verifyRead bytes (a hash piece) into its own aligned buffer: several
// requests keep a device's queue busy (one 4 MiB read at a time left it
// idle while the read was checked), and a 1 MiB buffer that the kernel
// fills and the check reads stays in the CPU cache. 4 x 1 MiB: the same
// memory as the single 4 MiB buffer before.
const (
	verifyReaders = 4
	verifyRead    = hashUnit
)

// region is one contiguous written range and a digest of its content.
type region struct {
	off, n int64
	zero   bool   // every byte written there was zero
	sum    uint64 // sum of the pieces' hashes (pieceHash) when not zero
}

// writeSums records what a restore wrote, region by region, so -verify can
// read it back and compare without hashing the whole image a second time:
// all-zero regions (most of a typical disk) are checked to read back as
// zeros (or to be holes), the others by seeded 64-bit hashes of their
// hashUnit pieces.
//
// The read-back proves the medium, not the page cache: it reads with
// O_DIRECT where the target takes it (block devices, most filesystems),
// else after fsync, BLKFLSBUF and FADV_DONTNEED. While the restore runs,
// background readers (start) already read back every piece whose writes
// finished (below the sink's frontier), so what was written is verified
// while the rest is written, zeros included; verify then checks the rest.
type writeSums struct {
	seed    maphash.Seed
	mu      sync.Mutex // guards regions, cur and the piece state against the readers
	regions []region
	cur     *region
	h       maphash.Hash // the current data piece
	inPiece bool         // h holds a piece not yet added to cur.sum

	v *verifier // the read-back (nil until start or verify)
}

func newWriteSums() *writeSums {
	w := &writeSums{seed: maphash.MakeSeed()}
	w.h.SetSeed(w.seed)
	return w
}

// verifyHook, when set (tests), is called before a data piece is read
// back, one call at a time.
var (
	verifyHook   func(off, n int64)
	verifyHookMu sync.Mutex
)

// pieceStart starts the hash of the piece at off: its offset first, so
// that data read back from the wrong place does not match.
func pieceStart(h *maphash.Hash, off int64) {
	h.Reset()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(off))
	h.Write(b[:])
}

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
		}
		if !zero {
			// Pieces end at multiples of hashUnit (which divides sumUnit)
			// and where the region ends.
			for p, o := part, off; len(p) > 0; {
				if !w.inPiece {
					pieceStart(&w.h, o)
					w.inPiece = true
				}
				m := min(int64(len(p)), hashUnit-o%hashUnit)
				w.h.Write(p[:m])
				p, o = p[m:], o+m
				if o%hashUnit == 0 {
					w.cur.sum += w.h.Sum64()
					w.inPiece = false
				}
			}
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
		if w.inPiece {
			w.cur.sum += w.h.Sum64()
			w.inPiece = false
		}
		w.cur = nil
	}
}

// regionAt returns region i as recorded so far, and whether it is
// complete (the writer moved past it); ok is false when there is none.
func (w *writeSums) regionAt(i int) (r region, closed, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i >= len(w.regions) {
		return region{}, false, false
	}
	return w.regions[i], w.cur == nil || i < len(w.regions)-1, true
}

// piece is one read-back: n bytes at off of region ri.
type piece struct {
	ri     int
	off, n int64
	zero   bool
}

// verifier reads a target back for -verify, past the page cache, with
// verifyReaders reads in flight. Pieces are handed out in order; each
// region is compared once it is complete and all its pieces were checked.
type verifier struct {
	w       *writeSums
	f       *os.File // the target as restored
	path    string
	isBlock bool

	dmu      sync.Mutex
	direct   *os.File    // the target opened O_RDONLY|O_DIRECT (nil: none)
	noDirect atomic.Bool // direct reads were refused: through the dropped page cache
	dropped  bool        // dropCache ran since noDirect (dmu)

	bufs chan []byte // the readers' buffers (verifyRead bytes, aligned)

	mu      sync.Mutex
	ri      int   // the region being handed out
	rel     int64 // bytes of region ri handed out
	pend    map[int]*pendSum
	err     error
	checked int64 // bytes checked
	early   int64 // of those, by the background readers (not yet reported)

	// The background readers.
	kick chan struct{}
	quit chan struct{}
	wg   sync.WaitGroup
	bg   atomic.Bool
}

// pendSum is what was read back of a region so far.
type pendSum struct {
	sum  uint64
	done int64
}

func newVerifier(w *writeSums, f *os.File, path string) *verifier {
	v := &verifier{w: w, f: f, path: path, pend: map[int]*pendSum{}, bufs: make(chan []byte, verifyReaders)}
	if st, err := f.Stat(); err == nil {
		v.isBlock = st.Mode()&os.ModeDevice != 0
	}
	for _, b := range hugeBufs(verifyReaders, verifyRead) {
		v.bufs <- b
	}
	return v
}

// openDirect opens the target with O_DIRECT for the read-back, once.
func (v *verifier) openDirect() {
	v.dmu.Lock()
	defer v.dmu.Unlock()
	if v.direct != nil || v.noDirect.Load() {
		return
	}
	if d, err := os.OpenFile(v.path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		v.direct = d
	} else {
		v.noDirect.Store(true)
	}
}

func (v *verifier) closeDirect() {
	v.dmu.Lock()
	defer v.dmu.Unlock()
	if v.direct != nil {
		v.direct.Close()
		v.direct = nil
	}
}

// dropOnce flushes the target and drops its cache, once after the direct
// reads were refused (final: everything was written).
func (v *verifier) dropOnce() {
	v.dmu.Lock()
	defer v.dmu.Unlock()
	if !v.dropped {
		dropCache(v.f)
		v.dropped = true
	}
}

// readAt returns the bytes from off up to end, as many as buf holds,
// read from the medium (the range's writeback was waited for, see check):
// with O_DIRECT through the aligned block envelope around them when
// possible, else through the page cache after dropping the range from it.
func (v *verifier) readAt(buf []byte, off, end int64) ([]byte, error) {
	fd := int(v.f.Fd())
	v.dmu.Lock()
	d := v.direct
	v.dmu.Unlock()
	if d != nil && !v.noDirect.Load() {
		a0 := off &^ (directAlign - 1)
		k := min(end-off, a0+int64(len(buf))-off)
		a1 := (off + k + directAlign - 1) &^ (directAlign - 1)
		m, err := d.ReadAt(buf[:a1-a0], a0)
		if int64(m) >= off+k-a0 {
			return buf[off-a0 : off-a0+k], nil
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, unix.EINVAL) {
			return nil, err
		}
		// Refused (alignment) or short: read through the page cache.
		v.noDirect.Store(true)
	}
	// Its pages dropped (they are clean), so the read comes from the medium.
	k := min(end-off, int64(len(buf)))
	_ = unix.Fadvise(fd, off, k, unix.FADV_DONTNEED)
	m, err := v.f.ReadAt(buf[:k], off)
	if err != nil && !(errors.Is(err, io.EOF) && int64(m) == k) {
		return nil, err
	}
	return buf[:k], nil
}

// dropCache flushes f and drops its cached pages, so reads come from the medium.
func dropCache(f *os.File) {
	fd := int(f.Fd())
	_ = unix.Fsync(fd)
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	_, _ = unix.IoctlRetInt(fd, unix.BLKFLSBUF)
}

// claim hands out the next piece that ends at or below limit (everything
// below it reached the target; final: the writing is over); ok is false
// when there is none yet.
// Regions that became complete on the way are compared.
func (v *verifier) claim(limit int64, final bool) (p piece, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for v.err == nil {
		r, closed, exists := v.w.regionAt(v.ri)
		if !exists {
			return piece{}, false
		}
		a, end := r.off+v.rel, r.off+r.n
		if a >= end {
			if !closed {
				return piece{}, false
			}
			v.finish(v.ri, r)
			v.ri, v.rel = v.ri+1, 0
			continue
		}
		if v.pend[v.ri] == nil {
			v.pend[v.ri] = &pendSum{}
		}
		var b int64
		switch {
		case r.zero && !v.isBlock && isHole(int(v.f.Fd()), a, min(end, limit)-a):
			// A hole of a file reads as zeros from the filesystem's map:
			// nothing on the medium to read.
			b = min(end, limit)
			v.rel += b - a
			v.done(piece{ri: v.ri, off: a, n: b - a, zero: true}, 0, nil)
			continue
		case r.zero:
			b = min(a+verifyRead, end, limit)
		default:
			// A data piece is checked whole: it must not grow any more.
			next := (a/hashUnit + 1) * hashUnit
			b = min(next, end)
			if (!closed && b < next) || b > limit {
				return piece{}, false
			}
		}
		// While a file is written, zeros the sink skipped (a hole to be)
		// can leave it shorter than the frontier until the sink sets its
		// size at the end: a data piece whose zeros lie past the file's
		// current end waits for that (or for the final check); a zero
		// piece stops there, and what lies past it is a hole (isHole, on
		// the next claim). Never a short read taken as a failure.
		if !final && !v.isBlock && b > a {
			if fi, err := v.f.Stat(); err == nil && b > fi.Size() {
				if !r.zero || a >= fi.Size() {
					return piece{}, false
				}
				b = fi.Size()
			}
		}
		if b <= a {
			return piece{}, false
		}
		v.rel += b - a
		return piece{ri: v.ri, off: a, n: b - a, zero: r.zero}, true
	}
	return piece{}, false
}

// done records piece p checked (h: its hash) or failed; v.mu is held.
func (v *verifier) done(p piece, h uint64, err error) {
	if err != nil {
		if v.err == nil {
			v.err = err
		}
		return
	}
	ps := v.pend[p.ri]
	ps.sum += h
	ps.done += p.n
	v.checked += p.n
	if r, closed, _ := v.w.regionAt(p.ri); closed {
		v.finish(p.ri, r)
	}
}

// finish compares region ri (complete) once all its pieces were checked;
// v.mu is held.
func (v *verifier) finish(ri int, r region) {
	ps := v.pend[ri]
	if ps == nil || ps.done < r.n {
		return
	}
	delete(v.pend, ri)
	if !r.zero && ps.sum != r.sum && v.err == nil {
		v.err = fmt.Errorf("%w: bytes %d-%d read back from the medium differ from what was written", ErrVerify, r.off, r.off+r.n-1)
	}
}

// check reads piece p back into buf and checks it: zeros, or its hash.
func (v *verifier) check(ctx context.Context, p piece, buf []byte, h *maphash.Hash) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if !p.zero && verifyHook != nil {
		verifyHookMu.Lock()
		verifyHook(p.off, p.n)
		verifyHookMu.Unlock()
	}
	// A file's pages may still be dirty behind the frontier: their
	// writeback first (a direct read would do it itself; this says so).
	end := p.off + p.n
	_ = unix.SyncFileRange(int(v.f.Fd()), p.off, p.n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	if !p.zero {
		pieceStart(h, p.off)
	}
	for off := p.off; off < end; {
		b, err := v.readAt(buf, off, end)
		if err != nil {
			return 0, fmt.Errorf("verify: reading back at byte %d: %w", off, unwrapPath(err))
		}
		if p.zero {
			if i := zeros.First(b); i >= 0 {
				return 0, fmt.Errorf("%w: bytes %d-%d should read back as zeros but byte %d does not (the medium does not hold what was written)", ErrVerify, p.off, end-1, off+int64(i))
			}
		} else {
			h.Write(b)
		}
		off += int64(len(b))
	}
	if p.zero {
		return 0, nil
	}
	return h.Sum64(), nil
}

// run is one reader: it checks the pieces below limit() until there are
// none left (final) or it is told to quit (background, woken by kick).
func (v *verifier) run(ctx context.Context, limit func() int64, final bool, count func(int64)) {
	buf := <-v.bufs
	defer func() { v.bufs <- buf }()
	var h maphash.Hash
	h.SetSeed(v.w.seed)
	var timer *time.Timer
	for {
		if !final {
			select {
			case <-v.quit:
				return
			default:
			}
		}
		p, ok := v.claim(limit(), final)
		if !ok {
			if final {
				return
			}
			if timer == nil {
				timer = time.NewTimer(50 * time.Millisecond)
				defer timer.Stop()
			} else {
				timer.Reset(50 * time.Millisecond)
			}
			select {
			case <-v.kick:
			case <-timer.C:
			case <-v.quit:
				return
			case <-ctx.Done():
				return
			}
			continue
		}
		sum, err := v.check(ctx, p, buf, &h)
		v.mu.Lock()
		v.done(p, sum, err)
		if !final && err == nil {
			v.early += p.n
		}
		v.mu.Unlock()
		if count != nil && err == nil {
			count(p.n)
		}
	}
}

// start runs the background readers: they read back, in order, each
// piece that ends at or below frontier() (everything before the frontier
// has reached the target), woken by poke.
func (w *writeSums) start(ctx context.Context, f *os.File, path string, frontier func() int64) {
	if w.v == nil {
		w.v = newVerifier(w, f, path)
	}
	v := w.v
	v.openDirect()
	v.kick, v.quit = make(chan struct{}, verifyReaders), make(chan struct{})
	v.bg.Store(true)
	for range verifyReaders {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			v.run(ctx, frontier, false, nil)
		}()
	}
}

// stop stops the background readers, if any, once their reads are done.
func (w *writeSums) stop() {
	if v := w.v; v != nil && v.bg.Load() {
		close(v.quit)
		v.wg.Wait()
		v.bg.Store(false)
	}
}

// close stops the background readers and closes the read-back's descriptor.
func (w *writeSums) close() {
	w.stop()
	if w.v != nil {
		w.v.closeDirect()
		w.v = nil
	}
}

// poke wakes the background readers, if any.
func (w *writeSums) poke() {
	if v := w.v; v != nil && v.bg.Load() {
		for range verifyReaders {
			select {
			case v.kick <- struct{}{}:
			default:
				return
			}
		}
	}
}

// verify reads back from f whatever was recorded and not checked yet
// (by the background readers or an earlier verify) and compares.
func (w *writeSums) verify(ctx context.Context, opt *Options, f *os.File, path string) error {
	w.stop()
	w.mu.Lock()
	w.flush()
	var total int64
	for _, r := range w.regions {
		total += r.n
	}
	w.mu.Unlock()
	if w.v == nil {
		w.v = newVerifier(w, f, path)
	}
	v := w.v
	defer v.closeDirect()
	v.mu.Lock()
	err, checked, early := v.err, v.checked, v.early
	v.early = 0
	v.mu.Unlock()
	if err != nil {
		return err
	}
	v.openDirect()
	if v.noDirect.Load() {
		v.dropOnce()
	}
	if early > 0 {
		opt.logf("verifying: reading back %s (%s were read back while writing)", gpt.HumanBytes(total-checked), gpt.HumanBytes(early))
	} else {
		opt.logf("verifying: reading back %s", gpt.HumanBytes(total-checked))
	}
	var done atomic.Int64
	stopProgress := startProgress(opt, "verify", total-checked, done.Load)
	defer stopProgress()
	all := func() int64 { return math.MaxInt64 }
	var wg sync.WaitGroup
	for range verifyReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.run(ctx, all, true, func(n int64) { done.Add(n) })
		}()
	}
	wg.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err == nil {
		if err := ctx.Err(); err != nil {
			v.err = err
		} else if _, _, more := w.regionAt(v.ri); more || len(v.pend) > 0 {
			v.err = fmt.Errorf("verify: internal error: %d regions left unchecked", len(v.pend))
		}
	}
	return v.err
}

// isHole reports whether [off, off+n) of a file is one hole (reads as
// zeros without data); false when unknown (block devices, no SEEK_DATA).
func isHole(fd int, off, n int64) bool {
	if n <= 0 {
		return false
	}
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true
	}
	return err == nil && data >= off+n
}
