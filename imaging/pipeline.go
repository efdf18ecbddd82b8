package imaging

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/esxi-rescue/rescue/internal/zeros"
)

// chunk is one pipeline buffer and what it holds, or a run of zeros that
// was never read (a hole of a sparse source file).
type chunk struct {
	buf  []byte // aligned, fixed size (nil for a hole)
	n    int    // bytes held (or zero bytes in a hole)
	off  int64  // offset in the uncompressed stream
	hole bool   // n zero bytes, not in buf
	refs atomic.Int32
	own  bool // not from the pool: dropped after use
}

// alignedBuf returns size bytes whose start is 4096-aligned (O_DIRECT-ready).
func alignedBuf(size int) []byte {
	b := make([]byte, size+4096)
	a := int(uintptr(unsafe.Pointer(&b[0])) & 4095)
	if a != 0 {
		a = 4096 - a
	}
	return b[a : a+size : a+size]
}

// newPool makes the pipeline's bounded set of buffers.
func newPool(n, size int) chan *chunk {
	pool := make(chan *chunk, n)
	for range n {
		pool <- &chunk{buf: alignedBuf(size)}
	}
	return pool
}

// consumer takes the image stream in order: data bytes, and runs of zeros
// that were never read (holes of a sparse source file).
type consumer interface {
	data(b []byte, off int64) error
	zero(off, n int64) error
}

// holeSkipper is a reader that knows where its source has holes.
type holeSkipper interface {
	// skipHole moves past up to max bytes of a hole at the current
	// position and says how many; 0 when data (or nothing known) is next.
	skipHole(max int64) int64
}

// maxHoleChunk bounds one hole chunk, so progress moves on a huge hole.
const maxHoleChunk = 1 << 30

// shaDigest is a consumer hashing the whole stream, holes included.
type shaDigest struct{ h hash.Hash }

func (s *shaDigest) data(b []byte, _ int64) error { s.h.Write(b); return nil }

func (s *shaDigest) zero(_ int64, n int64) error {
	_, err := zeros.Write(s.h, n)
	return err
}

// feed hands chunk c to consumer k.
func feed(k consumer, c *chunk) error {
	if c.hole {
		return k.zero(c.off, int64(c.n))
	}
	return k.data(c.buf[:c.n], c.off)
}

// runPipeline reads r in chunks from pool and hands each chunk, in order,
// to w and to every digest; each digest runs in its own goroutine, in
// parallel with w and with the next read. When r is a holeSkipper, holes
// pass as zero runs without being read. first, when not nil, is a chunk
// already read from the start of the stream (firstEOF: the stream ended
// there). It returns the stream's length. The first error stops the
// pipeline; errors from w win over a digest's, a digest's over the read's.
func runPipeline(ctx context.Context, r io.Reader, pool chan *chunk, first *chunk, firstEOF bool,
	w consumer, digests ...consumer) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nbuf := cap(pool)
	chans := make([]chan *chunk, 1+len(digests))
	for i := range chans {
		chans[i] = make(chan *chunk, nbuf)
	}
	release := func(c *chunk) {
		if c.refs.Add(-1) == 0 && !c.own {
			pool <- c
		}
	}
	hs, _ := r.(holeSkipper)
	var rerr error
	var total int64
	go func() {
		defer func() {
			for _, ch := range chans {
				close(ch)
			}
		}()
		send := func(c *chunk) {
			c.refs.Store(int32(len(chans)))
			total += int64(c.n)
			for _, ch := range chans {
				ch <- c
			}
		}
		var off int64
		if first != nil {
			first.off = 0
			send(first)
			off = int64(first.n)
			if firstEOF {
				return
			}
		}
		for {
			if ctx.Err() != nil {
				rerr = ctx.Err()
				return
			}
			if hs != nil {
				if n := hs.skipHole(maxHoleChunk); n > 0 {
					send(&chunk{n: int(n), off: off, hole: true, own: true})
					off += n
					continue
				}
			}
			var c *chunk
			select {
			case c = <-pool:
			case <-ctx.Done():
				rerr = ctx.Err()
				return
			}
			n, err := io.ReadFull(r, c.buf)
			c.n, c.off = n, off
			if n > 0 {
				send(c)
				off += int64(n)
			} else {
				pool <- c
			}
			// ReadFull's own end-of-stream markers, compared by identity: a
			// decompressor's "unexpected EOF" inside a frame is a real error.
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				rerr = err
				return
			}
		}
	}()

	derrs := make([]error, len(digests))
	var wg sync.WaitGroup
	for i, d := range digests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range chans[1+i] {
				if derrs[i] == nil && ctx.Err() == nil {
					if derrs[i] = feed(d, c); derrs[i] != nil {
						cancel()
					}
				}
				release(c)
			}
		}()
	}

	var werr error
	kw, _ := w.(keeper)
	for c := range chans[0] {
		if werr == nil && ctx.Err() == nil {
			if kw != nil {
				kw.setKeep(func() func() {
					c.refs.Add(1)
					return func() { release(c) }
				})
			}
			if werr = feed(w, c); werr != nil {
				cancel()
			}
			if kw != nil {
				kw.setKeep(nil)
			}
		}
		release(c)
	}
	wg.Wait()
	if werr != nil {
		return total, werr
	}
	for _, err := range derrs {
		if err != nil {
			return total, err
		}
	}
	if rerr != nil {
		if errors.Is(rerr, context.Canceled) {
			return total, fmt.Errorf("cancelled: %w", rerr)
		}
		return total, rerr
	}
	if err := ctx.Err(); err != nil {
		// Cancelled from outside after the last read: writes were skipped.
		return total, fmt.Errorf("cancelled: %w", err)
	}
	return total, nil
}
