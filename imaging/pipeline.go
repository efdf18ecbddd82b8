package imaging

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"unsafe"
)

// chunk is one pipeline buffer and what it holds.
type chunk struct {
	buf  []byte // aligned, fixed size
	n    int    // bytes held
	off  int64  // offset in the uncompressed stream
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

// pipeResult is what a pipeline run saw.
type pipeResult struct {
	total int64  // bytes streamed
	sum   []byte // SHA-256 of the whole stream
}

// runPipeline reads r in chunks from pool and hands each chunk, in order, to
// a hashing goroutine and to write, which run in parallel with the next
// read. first, when not nil, is a chunk already read from the start of the
// stream (firstEOF: the stream ended there). Errors from write win over
// read errors.
func runPipeline(ctx context.Context, r io.Reader, pool chan *chunk, first *chunk, firstEOF bool,
	write func(b []byte, off int64) error) (pipeResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nbuf := cap(pool)
	hashCh := make(chan *chunk, nbuf)
	writeCh := make(chan *chunk, nbuf)
	release := func(c *chunk) {
		if c.refs.Add(-1) == 0 && !c.own {
			pool <- c
		}
	}
	var rerr error
	var total int64
	go func() {
		defer close(writeCh)
		defer close(hashCh)
		send := func(c *chunk) {
			c.refs.Store(2)
			total += int64(c.n)
			hashCh <- c
			writeCh <- c
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
			if ctx.Err() != nil {
				rerr = ctx.Err()
				return
			}
		}
	}()

	var res pipeResult
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h := sha256.New()
		for c := range hashCh {
			h.Write(c.buf[:c.n])
			release(c)
		}
		res.sum = h.Sum(nil)
	}()

	var werr error
	for c := range writeCh {
		if werr == nil {
			if werr = write(c.buf[:c.n], c.off); werr != nil {
				cancel()
			}
		}
		release(c)
	}
	wg.Wait()
	res.total = total
	if werr != nil {
		return res, werr
	}
	if rerr != nil {
		if errors.Is(rerr, context.Canceled) && ctx.Err() != nil {
			return res, fmt.Errorf("cancelled: %w", rerr)
		}
		return res, rerr
	}
	return res, nil
}
