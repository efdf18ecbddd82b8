package imaging

// Delta restore (Options.Delta): the target is read alongside the image
// stream, block by block, and only the blocks that differ go on to the
// writer. The delta writer sits in front of the held-back writer (held),
// so everything else stays as in a full restore: the image's checksums
// are taken over the image stream (the digests get every byte, whatever is
// on the disk), the guard has invalidated the target's tables before the
// first read, the held-back ranges (image head, backup header, the
// target's table regions) always pass through and are written last, after
// the checks, and the GPT fix-up runs afterwards. An uncompressed image
// file (or disk) is read with O_DIRECT as well (directImage): neither of
// the two streams a delta restore must read goes through the page cache.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

// Delta geometry: blocks are compared at deltaBlock granularity (aligned
// to the target's start), the target is read in deltaChunk reads (a
// multiple of deltaBlock) by deltaReaders readers, each with deltaBufs
// buffers: 8 MiB in all, up to three reads in flight while the writer
// compares the fourth chunk (a restore onto a block device already holds
// 8 x 4 MiB pipeline buffers; peak RSS stays under 64 MiB).
const deltaBlock = 64 << 10

var (
	deltaChunk   = 2 << 20
	deltaReaders = 4
	deltaBufs    = 1
)

// DeltaStats describes a delta restore (Options.Delta).
type DeltaStats struct {
	// BlockSize is the granularity at which image and target were compared.
	BlockSize int
	// TargetRead counts the target's bytes read and compared.
	TargetRead int64
	// Identical counts image bytes already on the target: not written.
	Identical int64
	// Written counts the bytes written to the target (data and zeroed
	// regions, the held-back head and tables included).
	Written int64
}

// targetChunk is one read of the target.
type targetChunk struct {
	off int64
	buf []byte
	n   int
	err error
	rd  int // the reader it belongs to
}

// targetReader reads a target sequentially from its start, deltaReaders
// reads in flight, ahead of the delta writer by a bounded number of
// chunks. Reader r reads chunks r, r+deltaReaders, ...; next hands them
// out in order.
type targetReader struct {
	f      *os.File // O_DIRECT when possible
	fb     *os.File // the buffered descriptor, when f refuses a read
	own    bool     // f was opened here
	size   int64
	out    []chan *targetChunk
	free   []chan []byte
	cancel context.CancelFunc
	wg     sync.WaitGroup
	idx    int // next chunk index next hands out
	read   atomic.Int64
	direct atomic.Bool
}

// newTargetReader starts reading the target path (size bytes, buffered
// descriptor fb) from its start.
func newTargetReader(ctx context.Context, path string, fb *os.File, size int64) *targetReader {
	tr := &targetReader{f: fb, fb: fb, size: size}
	if f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		tr.f, tr.own = f, true
		tr.direct.Store(true)
	}
	ctx, tr.cancel = context.WithCancel(ctx)
	bufs := hugeBufs(deltaReaders*deltaBufs, deltaChunk)
	// All channels first, then the readers: a reader started while the
	// slices were still being appended to read their headers as they
	// were rewritten (a data race, go test -race).
	for range deltaReaders {
		tr.out = append(tr.out, make(chan *targetChunk, deltaBufs))
		free := make(chan []byte, deltaBufs)
		for range deltaBufs {
			free <- bufs[0]
			bufs = bufs[1:]
		}
		tr.free = append(tr.free, free)
	}
	for r := range deltaReaders {
		tr.wg.Add(1)
		go tr.run(ctx, r)
	}
	return tr
}

func (tr *targetReader) run(ctx context.Context, r int) {
	defer tr.wg.Done()
	defer close(tr.out[r])
	for i := int64(r); ; i += int64(deltaReaders) {
		off := i * int64(deltaChunk)
		if off >= tr.size {
			return
		}
		var buf []byte
		select {
		case buf = <-tr.free[r]:
		case <-ctx.Done():
			return
		}
		want := int(min(int64(deltaChunk), tr.size-off))
		c := &targetChunk{off: off, buf: buf, rd: r}
		c.n, c.err = tr.readAt(buf[:(want+4095)&^4095], off)
		c.n = min(c.n, want)
		short := c.n < want // the target ended early (a file that shrank): the rest counts as different
		if c.err == io.EOF {
			c.err = nil
		}
		if c.err != nil {
			c.err = fmt.Errorf("reading the target at byte %d: %w", off, unwrapPath(c.err))
		}
		tr.read.Add(int64(c.n))
		tr.out[r] <- c
		if c.err != nil || short {
			return
		}
	}
}

// readAt reads at off with O_DIRECT, or buffered when the device or
// filesystem refuses direct reads.
func (tr *targetReader) readAt(b []byte, off int64) (int, error) {
	if tr.direct.Load() {
		n, err := tr.f.ReadAt(b, off)
		if !errors.Is(err, unix.EINVAL) {
			return n, err
		}
		tr.direct.Store(false)
	}
	return tr.fb.ReadAt(b, off)
}

// next returns the next chunk in order; nil past the target's end.
func (tr *targetReader) next() *targetChunk {
	c, ok := <-tr.out[tr.idx%deltaReaders]
	if !ok {
		return nil
	}
	tr.idx++
	return c
}

// release gives a chunk's buffer back to its reader.
func (tr *targetReader) release(c *targetChunk) { tr.free[c.rd] <- c.buf }

// stop ends the readers and closes what newTargetReader opened.
func (tr *targetReader) stop() {
	tr.cancel()
	for _, ch := range tr.out {
		for c := range ch {
			_ = c
		}
	}
	tr.wg.Wait()
	if tr.own {
		tr.f.Close()
	}
}

// directImage reads an uncompressed image file (or disk) past the page
// cache for a delta restore: each read of the pipeline (a 4 MiB buffer,
// aligned) is split into imagePieces O_DIRECT reads issued together, so
// the image's device has several requests in flight while the target is
// read alongside. Buffered reads of the image, competing with the target's
// direct reads on the same storage, cost a page-cache copy (and under
// memory pressure, reclaim) per byte; measured in bench/delta.sh, they
// made a delta restore about twice as slow as reading both. Reads that
// are not aligned (the image's unaligned tail, the sector-by-sector
// retries after a read error) and a file refusing O_DIRECT go through the
// buffered descriptor as before.
type directImage struct {
	direct io.ReaderAt // the image opened again with O_DIRECT
	fb     io.ReaderAt // the devReader's buffered reader
	off    atomic.Bool // O_DIRECT refused: buffered from then on
}

// imagePieces is how many O_DIRECT reads one pipeline read is split into.
var imagePieces = 2

func (r *directImage) ReadAt(p []byte, off int64) (int, error) {
	k := len(p) &^ 4095
	if r.off.Load() || k == 0 || off%4096 != 0 || uintptr(unsafe.Pointer(&p[0]))%4096 != 0 {
		return r.fb.ReadAt(p, off)
	}
	n, err := r.readDirect(p[:k], off)
	if errors.Is(err, unix.EINVAL) && n == 0 {
		r.off.Store(true)
		return r.fb.ReadAt(p, off)
	}
	if err != nil || k == len(p) {
		return n, err
	}
	m, err := r.fb.ReadAt(p[k:], off+int64(k))
	return n + m, err
}

// readDirect reads p (aligned) at off in imagePieces concurrent reads.
func (r *directImage) readDirect(p []byte, off int64) (int, error) {
	pieces := max(1, min(imagePieces, len(p)/(512<<10)))
	if pieces == 1 {
		return r.direct.ReadAt(p, off)
	}
	step := (len(p)/pieces + 4095) &^ 4095
	ns := make([]int, pieces)
	errs := make([]error, pieces)
	var wg sync.WaitGroup
	for i := range pieces {
		lo := min(i*step, len(p))
		hi := min(lo+step, len(p))
		if i == pieces-1 {
			hi = len(p)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns[i], errs[i] = r.direct.ReadAt(p[lo:hi], off+int64(lo))
		}()
	}
	wg.Wait()
	// What was read is the prefix up to the first piece that came back
	// short (ReadAt says why: io.EOF, a read error).
	n := 0
	for i := range pieces {
		n += ns[i]
		if errs[i] != nil {
			return n, errs[i]
		}
	}
	return n, nil
}

// directSource makes the delta restore read src (an uncompressed image
// file or disk, read through its devReader) with O_DIRECT; it returns
// what to close afterwards (nil when the source stays as it was).
func directSource(src *source, compression string) func() error {
	if compression != "none" || src.dev == nil || src.file == nil || src.file == os.Stdin {
		return nil
	}
	f, err := os.OpenFile(src.file.Name(), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	src.dev.f = &directImage{direct: faultHook(f), fb: src.dev.f}
	return f.Close
}

// hugePool is newPool with hugeBufs buffers, for a delta restore.
func hugePool(n, size int) chan *chunk {
	pool := make(chan *chunk, n)
	for _, b := range hugeBufs(n, size) {
		pool <- &chunk{buf: b}
	}
	return pool
}

// deltaWriter is a consumer that passes on to next only the blocks of the
// image that differ from what the target holds; blocks overlapping the
// always ranges (those the held-back writer keeps for the end) are always
// passed on.
type deltaWriter struct {
	next      consumer
	tr        *targetReader
	cur       *targetChunk
	end       bool // the target has no more chunks
	always    [][2]int64
	identical atomic.Int64
	passed    atomic.Int64
	stopOnce  sync.Once
	closeSrc  func() error // the image's O_DIRECT descriptor (nil: none)
}

// targetAt returns the target's bytes from off to the end of the chunk
// holding it; nil past the target's end. Offsets must not go backwards.
func (d *deltaWriter) targetAt(off int64) ([]byte, error) {
	for d.cur == nil || off >= d.cur.off+int64(d.cur.n) {
		if d.end {
			return nil, nil
		}
		if d.cur != nil {
			d.tr.release(d.cur)
			d.cur = nil
		}
		c := d.tr.next()
		if c == nil {
			d.end = true
			return nil, nil
		}
		d.cur = c
		if c.err != nil {
			return nil, c.err
		}
		if c.n < int(min(int64(deltaChunk), d.tr.size-c.off)) {
			d.end = true // a short read: the target ended early, nothing follows
		}
	}
	if off < d.cur.off {
		return nil, fmt.Errorf("delta restore: image offset %d went backwards (target chunk at %d)", off, d.cur.off)
	}
	return d.cur.buf[off-d.cur.off : d.cur.n], nil
}

// held says whether [off, end) overlaps a range that is always passed on.
func (d *deltaWriter) held(off, end int64) bool {
	for _, r := range d.always {
		if off < r[1] && r[0] < end {
			return true
		}
	}
	return false
}

// scan walks [off, off+n) block by block; same(pos, k, t) says whether the
// image's k bytes at pos equal the target's bytes t (len(t) >= k). Runs of
// blocks that differ are passed to emit.
func (d *deltaWriter) scan(off, n int64, same func(pos int64, k int, t []byte) bool, emit func(lo, hi int64) error) error {
	end := off + n
	run := int64(-1)
	flush := func(pos int64) error {
		if run < 0 {
			return nil
		}
		lo := run
		run = -1
		d.passed.Add(pos - lo)
		return emit(lo, pos)
	}
	for pos := off; pos < end; {
		bend := min((pos/deltaBlock+1)*deltaBlock, end)
		k := int(bend - pos)
		equal := false
		if !d.held(pos, bend) {
			t, err := d.targetAt(pos)
			if err != nil {
				return err
			}
			equal = len(t) >= k && same(pos, k, t[:k])
		}
		if equal {
			if err := flush(pos); err != nil {
				return err
			}
			d.identical.Add(int64(k))
		} else if run < 0 {
			run = pos
		}
		pos = bend
	}
	return flush(end)
}

// setKeep hands the pipeline's hold on the current chunk to next (a
// keeper): the differing blocks passed on are slices of that chunk, so the
// sink's asynchronous writes keep working. The target reader only reads
// ahead of every offset passed on, never where a queued write goes.
func (d *deltaWriter) setKeep(keep func() func()) {
	if kw, ok := d.next.(keeper); ok {
		kw.setKeep(keep)
	}
}

// data compares image bytes b at off with the target (a consumer).
func (d *deltaWriter) data(b []byte, off int64) error {
	return d.scan(off, int64(len(b)),
		func(pos int64, k int, t []byte) bool { return bytes.Equal(b[pos-off:pos-off+int64(k)], t) },
		func(lo, hi int64) error { return d.next.data(b[lo-off:hi-off], lo) })
}

// zero handles n zero bytes of the image at off (a consumer): only where
// the target is not already zero are they zeroed.
func (d *deltaWriter) zero(off, n int64) error {
	return d.scan(off, n,
		func(_ int64, _ int, t []byte) bool { return zeros.Is(t) },
		func(lo, hi int64) error { return d.next.zero(lo, hi-lo) })
}

// stop ends the target's readers (again: nothing).
func (d *deltaWriter) stop() {
	d.stopOnce.Do(func() {
		if d.cur != nil {
			d.tr.release(d.cur)
			d.cur = nil
		}
		d.tr.stop()
		if d.closeSrc != nil {
			d.closeSrc()
		}
	})
}

// note is the delta part of the progress line.
func (d *deltaWriter) note() string {
	return fmt.Sprintf("target read %s, identical %s, passed on %s",
		gpt.HumanBytes(d.tr.read.Load()), gpt.HumanBytes(d.identical.Load()), gpt.HumanBytes(d.passed.Load()))
}

// stats returns what the delta restore did; written is what the sink
// wrote (data and zeroed bytes).
func (d *deltaWriter) stats(written int64) *DeltaStats {
	return &DeltaStats{BlockSize: deltaBlock, TargetRead: d.tr.read.Load(), Identical: d.identical.Load(), Written: written}
}

// startDelta starts a delta restore onto t in front of hd when
// opt.Delta asks for one (nil when not, or when t is new and there is
// nothing to compare). imgSize bounds what is read of the target when
// known (-1: the image's size is not known before the end).
func startDelta(ctx context.Context, opt *Options, src *source, compression string, t *target, hd *held, imgSize int64) (*deltaWriter, error) {
	if !opt.Delta {
		return nil, nil
	}
	if t.fresh {
		opt.logf("-delta: %s is new or empty, there is nothing to compare: a full restore", opt.Dst)
		return nil, nil
	}
	var always [][2]int64
	for _, r := range hd.ranges {
		always = append(always, [2]int64{r.off, r.off + int64(len(r.buf))})
	}
	size := t.size
	if imgSize >= 0 {
		size = min(size, imgSize)
	}
	d := &deltaWriter{next: hd, tr: newTargetReader(ctx, t.path, t.f, size), always: always}
	how := "O_DIRECT"
	if !d.tr.direct.Load() {
		how = "buffered"
	}
	if d.closeSrc = directSource(src, compression); d.closeSrc != nil {
		how += "; the image too"
	}
	opt.logf("delta restore: reading %s alongside the image (%s), writing only the %d KiB blocks that differ",
		opt.Dst, how, deltaBlock>>10)
	opt.progressNote = d.note
	return d, nil
}
