package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// The range engine: parallel ranged downloads of one object, whatever
// the protocol. Over a link with a long round trip a single TCP stream is
// limited by its window (bytes in flight / RTT), not by the link; several
// connections (or several requests in flight on one, as SMB does), each
// fetching byte ranges of the image, add up. rangeReader fetches the
// image in chunks of `chunk` bytes over up to `conns` workers, the lowest
// chunk not yet asked for first, and hands them to Read in order. At most
// conns+1 chunks are held at once (the one being read and one per
// worker), so memory is bounded by (conns+1) × chunk (10 MiB with the
// defaults: the pipeline's buffers and the block-device writers need the
// rest of the 64 MiB a restore may take).
//
// The protocol plugs in as an openRange function: it asks for bytes
// [off, end) and checks that the answer is that range of the same object
// (HTTP: 206, Content-Range, the image's size, If-Range with the first
// answer's ETag / Last-Modified; S3: If-Match with the object's ETag;
// SMB: the file's size and modification time after a reconnect). A
// connection lost inside a chunk is resumed from the byte where it
// stopped, with the same back-off and limits as a single download; so are
// errors that openRange marks retryable (5xx answers, unreachable
// servers). A body that brings less than 64 KiB per IdleTimeout of
// reading (a stalled server) is cancelled and resumed the same way. The
// SHA-256 of the image is computed by the pipeline over the reassembled
// stream.

// openRange asks for bytes [off, end) of the object and returns the body
// once the answer is known to be that range of the same object. ctx ends
// the request, body included (the stall watch cancels it). An error
// wrapped in *retryable may be mended by asking again; others end the
// download.
type openRange func(ctx context.Context, off, end int64) (io.ReadCloser, error)

const (
	// defaultHTTPConns is the number of connections when Options.HTTPConns is 0.
	defaultHTTPConns = 4
	// maxHTTPConns bounds Options.HTTPConns (memory: one chunk each).
	maxHTTPConns = 8
	// defaultHTTPChunk is the size of one ranged request.
	defaultHTTPChunk = 2 << 20
)

// rangeParams returns the number of workers and the chunk size of opt.
func (o *Options) rangeParams() (conns int, chunk int64) {
	conns, chunk = min(o.HTTPConns, maxHTTPConns), o.httpChunk
	if conns <= 0 {
		conns = defaultHTTPConns
	}
	if chunk <= 0 {
		chunk = defaultHTTPChunk
	}
	return conns, chunk
}

// rangeReader reads an image as ranges over several workers (see above).
type rangeReader struct {
	ctx         context.Context
	cancel      context.CancelFunc
	stop        func() bool
	opt         *Options
	name        string    // the image, for messages (no secrets)
	kind        error     // wrapped by the errors that end the download (ErrHTTP; nil: none)
	open        openRange // asks for one range
	size, chunk int64
	conns       int
	nchunks     int
	window      int
	wg          sync.WaitGroup
	closers     []func() error // run by Close after the workers ended

	mu     sync.Mutex
	cond   *sync.Cond
	next   int                 // the next chunk to hand to a worker
	read   int                 // the chunk Read is in
	chunks map[int]*rangeChunk // chunks in [read, next)
	free   [][]byte
	allocs int                // chunk buffers made (at most window)
	err    error              // the first error that ends the download
	init   map[int]*rangeBody // answers already open, by chunk

	// Read's own state (one reader).
	cur *rangeChunk
	pos int
	off int64
}

// newRangeReader prepares the download of an object of size bytes;
// start begins it.
func newRangeReader(ctx context.Context, opt *Options, name string, kind error, size, chunk int64, conns int, open openRange) *rangeReader {
	r := &rangeReader{opt: opt, name: name, kind: kind, open: open, size: size, chunk: chunk, conns: conns}
	r.nchunks = int((size + chunk - 1) / chunk)
	r.window = conns + 1
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.cond = sync.NewCond(&r.mu)
	r.chunks = map[int]*rangeChunk{}
	r.init = map[int]*rangeBody{}
	return r
}

// start starts the workers; init holds answers already open, by chunk.
func (r *rangeReader) start(init map[int]*rangeBody) {
	r.stop = context.AfterFunc(r.ctx, func() {
		r.mu.Lock()
		if r.err == nil {
			r.err = r.ctx.Err()
		}
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	for i, b := range init {
		r.init[i] = b
	}
	r.wg.Add(r.conns)
	for w := 0; w < r.conns; w++ {
		go r.worker()
	}
}

// fail is an error that ends the download.
func (r *rangeReader) fail(format string, args ...any) error {
	err := fmt.Errorf("%s: "+format, append([]any{r.name}, args...)...)
	if r.kind != nil {
		return fmt.Errorf("%w: %w", r.kind, err)
	}
	return err
}

// rangeChunk is one chunk, being fetched or ready.
type rangeChunk struct {
	buf  []byte
	done bool
}

// rangeBody is an open answer whose body continues at off and ends at end.
type rangeBody struct {
	body     io.ReadCloser
	cancel   context.CancelFunc
	idle     *idleWatch
	off, end int64
}

func (b *rangeBody) close() {
	if b.body != nil {
		b.body.Close()
	}
	b.idle.close()
	if b.cancel != nil {
		b.cancel()
	}
}

func (r *rangeReader) worker() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		for r.err == nil && r.next < r.nchunks && r.next >= r.read+r.window {
			r.cond.Wait()
		}
		if r.err != nil || r.next >= r.nchunks {
			r.mu.Unlock()
			return
		}
		i := r.next
		r.next++
		var buf []byte
		if k := len(r.free); k > 0 {
			buf, r.free = r.free[k-1], r.free[:k-1]
		} else {
			buf = make([]byte, r.chunk)
			r.allocs++
		}
		c := &rangeChunk{}
		r.chunks[i] = c
		body := r.init[i]
		delete(r.init, i)
		r.mu.Unlock()

		data, err := r.fetch(i, buf, body)
		r.mu.Lock()
		if err != nil {
			if r.err == nil {
				r.err = err
			}
			r.cancel()
		} else {
			c.buf, c.done = data, true
		}
		r.cond.Broadcast()
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Read returns the image's bytes in order.
func (r *rangeReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.cur == nil {
		r.mu.Lock()
		for {
			if c := r.chunks[r.read]; c != nil && c.done {
				r.cur = c
				break
			}
			if r.err != nil {
				err := r.err
				r.mu.Unlock()
				return 0, err
			}
			r.cond.Wait()
		}
		r.mu.Unlock()
	}
	n := copy(p, r.cur.buf[r.pos:])
	r.pos += n
	r.off += int64(n)
	if r.pos == len(r.cur.buf) {
		r.mu.Lock()
		delete(r.chunks, r.read)
		r.free = append(r.free, r.cur.buf[:cap(r.cur.buf)])
		r.read++
		r.cur, r.pos = nil, 0
		r.cond.Broadcast()
		r.mu.Unlock()
	}
	return n, nil
}

// Close stops the workers and waits for them.
func (r *rangeReader) Close() error {
	r.cancel()
	r.wg.Wait()
	if r.stop != nil {
		r.stop()
	}
	for _, b := range r.init {
		b.close()
	}
	var err error
	for _, c := range r.closers {
		err = errors.Join(err, c())
	}
	return err
}

// fetch fills buf with chunk i, from body when it is given (an answer
// already open at the chunk's start), resuming after dropped connections.
func (r *rangeReader) fetch(i int, buf []byte, body *rangeBody) ([]byte, error) {
	start := int64(i) * r.chunk
	end := min(start+r.chunk, r.size)
	buf = buf[:end-start]
	got := 0
	stalls := 0
	lost := false
	for got < len(buf) {
		if body == nil {
			var err error
			if body, err = r.requestRetry(start+int64(got), end); err != nil {
				return nil, err
			}
			if lost {
				r.opt.logf("%s: resumed at byte %d (range %d-%d)", r.name, start+int64(got), start, end-1)
			}
		}
		n, err := body.readFull(buf[got:])
		// Progress: this connection brought a useful amount.
		progress := n >= minIdleBytes || got+n == len(buf)
		got += n
		if err == nil && body.end > end {
			// An answer that goes on past the chunk (the first one,
			// for the whole image): its connection is not reused.
			body.close()
			return buf, nil
		}
		if err == nil {
			if err = body.finish(); err == nil {
				return buf, nil
			}
		}
		body.close()
		if r.ctx.Err() != nil {
			return nil, r.ctx.Err()
		}
		if body.idle != nil && body.idle.fired.Load() {
			err = fmt.Errorf("less than %s arrived in %v: the server stalled", "64 KiB", r.opt.IdleTimeout)
		}
		pos := start + int64(got)
		var stop *stopErr
		if errors.Is(err, errRangeFatal) || errors.As(err, &stop) {
			return nil, r.fail("bytes %d-%d: %w", start, end-1, err)
		}
		r.opt.logf("%s: connection lost at byte %d (range %d-%d): %v", r.name, pos, start, end-1, err)
		if r.opt.Retries == 0 {
			return nil, r.fail("connection lost at byte %d, not resumed (retries 0): %v", pos, err)
		}
		lost = true
		if progress {
			stalls = 0
		} else {
			stalls++
		}
		if stalls > r.opt.Retries {
			return nil, r.fail("giving up after %d dropped connections in a row at byte %d: %v", stalls, pos, err)
		}
		if stalls > 0 {
			if err := r.sleep(r.opt.RetryDelay << min(stalls-1, 6)); err != nil {
				return nil, err
			}
		}
		body = nil
	}
	return buf, nil
}

// stopErr wraps an error of a body's Read that no retry can mend (the
// object changed): it ends the download even when the range's bytes all
// came.
type stopErr struct{ err error }

func (e *stopErr) Error() string { return e.err.Error() }
func (e *stopErr) Unwrap() error { return e.err }

// errRangeFatal marks an answer that no retry can mend (the server sent
// more than asked for).
var errRangeFatal = errors.New("the server sent more than the range asked for")

// readFull reads len(p) bytes of the body (fewer only with an error).
func (b *rangeBody) readFull(p []byte) (int, error) {
	got := 0
	for got < len(p) {
		t0 := b.idle.start(b.off)
		n, err := b.body.Read(p[got:])
		b.idle.stop(t0)
		got += n
		b.off += int64(n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				if got == len(p) {
					b.body = eofBody{b.body}
					return got, nil
				}
				err = io.ErrUnexpectedEOF
			}
			return got, err
		}
	}
	return got, nil
}

// finish checks that a ranged answer ends where it should and lets its
// connection go back to the pool.
func (b *rangeBody) finish() error {
	var one [1]byte
	n, err := b.body.Read(one[:])
	if n > 0 {
		return errRangeFatal
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	b.close()
	return nil
}

// eofBody is a body that already returned io.EOF.
type eofBody struct{ io.ReadCloser }

func (eofBody) Read([]byte) (int, error) { return 0, io.EOF }

func (r *rangeReader) sleep(d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
}

// requestRetry asks for bytes [off, end), retrying with back-off after
// the errors openRange marks retryable.
func (r *rangeReader) requestRetry(off, end int64) (*rangeBody, error) {
	delay := r.opt.RetryDelay
	var last error
	for attempt := 0; attempt <= r.opt.Retries; attempt++ {
		if attempt > 0 {
			r.opt.logf("%s: range %d-%d: retrying in %v (%d/%d): %v", r.name, off, end-1, delay, attempt, r.opt.Retries, last)
			if err := r.sleep(delay); err != nil {
				return nil, err
			}
			delay *= 2
		}
		b, err := r.request(off, end)
		if err == nil {
			return b, nil
		}
		var re *retryable
		if !errors.As(err, &re) {
			return nil, err
		}
		last = re.err
	}
	if r.opt.Retries == 0 {
		return nil, r.fail("range %d-%d: %w (not retried: retries 0)", off, end-1, last)
	}
	return nil, r.fail("range %d-%d: giving up after %d retries: %w", off, end-1, r.opt.Retries, last)
}

// retryable wraps an error that trying again may mend.
type retryable struct{ err error }

func (e *retryable) Error() string { return e.err.Error() }
func (e *retryable) Unwrap() error { return e.err }

// request asks for bytes [off, end) once: openRange, bounded by the
// connect timeout up to its answer, then watched for stalls.
func (r *rangeReader) request(off, end int64) (*rangeBody, error) {
	rctx, cancel := context.WithCancel(r.ctx)
	var late atomic.Bool
	timer := time.AfterFunc(r.opt.ConnectTimeout, func() { late.Store(true); cancel() })
	body, err := r.open(rctx, off, end)
	timer.Stop()
	if err != nil {
		cancel()
		if r.ctx.Err() != nil {
			return nil, r.ctx.Err()
		}
		if late.Load() {
			return nil, &retryable{fmt.Errorf("no answer within %v (connect, handshake, answer)", r.opt.ConnectTimeout)}
		}
		return nil, err
	}
	return &rangeBody{body: body, cancel: cancel, idle: newIdleWatch(r.opt.IdleTimeout, off, cancel), off: off, end: end}, nil
}
