package imaging

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
)

// Parallel ranged downloads. Over a link with a long round trip a single
// TCP stream is limited by its window (bytes in flight / RTT), not by the
// link; several connections, each fetching byte ranges of the image, add
// up. rangeReader fetches the image in chunks of httpChunk bytes over up
// to Options.HTTPConns connections, the lowest chunk not yet asked for
// first, and hands them to Read in order. At most HTTPConns+1 chunks are
// held at once (the one being read and one per connection), so memory is
// bounded by (HTTPConns+1) × httpChunk (10 MiB with the defaults: the
// pipeline's buffers and the block-device writers need the rest of the
// 64 MiB a restore may take).
//
// Every chunk is checked: it must come as 206 with the Content-Range asked
// for, the image's total size, and the ETag / Last-Modified of the first
// answer (If-Range asks the server to send the whole image instead when
// it changed, which is refused too). A connection lost inside a chunk is
// resumed from the byte where it stopped, with the same back-off and
// limits as a single download; so are 5xx answers. The SHA-256 of the
// image is computed by the pipeline over the reassembled stream.

const (
	// defaultHTTPConns is the number of connections when Options.HTTPConns is 0.
	defaultHTTPConns = 4
	// maxHTTPConns bounds Options.HTTPConns (memory: one chunk each).
	maxHTTPConns = 8
	// defaultHTTPChunk is the size of one ranged request.
	defaultHTTPChunk = 2 << 20
)

// rangeClient is used for ranged requests when Options.HTTPClient is the
// default one: keep-alive (a connection fetches chunk after chunk without
// a new handshake and TCP slow start each time) and HTTP/1.1 only, so that
// the connections are separate TCP streams (HTTP/2 would multiplex them
// over one, with one window).
var rangeClient = &http.Client{Transport: func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = maxHTTPConns
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return t
}()}

// openHTTPSource opens an http(s) image: over several connections when the
// server supports ranges, the size is known, the image is large enough and
// the answer has a validator (ETag or Last-Modified) to keep the chunks
// consistent; as one stream (httpReader) otherwise.
func openHTTPSource(ctx context.Context, opt *Options) (io.ReadCloser, int64, error) {
	h, err := openHTTP(ctx, opt)
	if err != nil {
		return nil, 0, err
	}
	conns, chunk := min(opt.HTTPConns, maxHTTPConns), opt.httpChunk
	if conns <= 0 {
		conns = defaultHTTPConns
	}
	if chunk <= 0 {
		chunk = defaultHTTPChunk
	}
	if conns == 1 || h.size < 2*chunk {
		return h, h.size, nil
	}
	switch {
	case !h.ranges:
		opt.logf("%s: one connection: the server does not announce range support (Accept-Ranges: bytes)", h.url)
		return h, h.size, nil
	case h.etag == "" && h.lastMod == "":
		opt.logf("%s: one connection: the server sends neither ETag nor Last-Modified, so ranges could not be checked to come from the same image", h.url)
		return h, h.size, nil
	}
	client := opt.HTTPClient
	if client == defaultHTTPClient {
		client = rangeClient
	}
	r := &rangeReader{opt: opt, url: h.url, client: client, size: h.size, chunk: chunk,
		etag: h.etag, lastMod: h.lastMod, conns: conns}
	r.nchunks = int((h.size + chunk - 1) / chunk)
	r.window = conns + 1
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.cond = sync.NewCond(&r.mu)
	r.chunks = map[int]*rangeChunk{}
	// Probe: the second chunk, asked for now. A server that announces
	// ranges but ignores them (200), or answers otherwise than it should,
	// gets the single stream already open.
	probe, err := r.request(chunk, min(2*chunk, h.size))
	if err != nil {
		r.cancel()
		if ctx.Err() != nil {
			h.Close()
			return nil, 0, ctx.Err()
		}
		opt.logf("%s: one connection: a range request failed: %v", h.url, err)
		return h, h.size, nil
	}
	// The first chunk comes from the answer already open.
	first := &rangeBody{body: h.body, cancel: h.cancel, idle: h.idle, off: 0, end: h.size}
	h.body, h.cancel, h.idle = nil, nil, nil
	opt.logf("%s: downloading over %d connections, %s ranges", h.url, conns, gpt.HumanBytes(chunk))
	stop := context.AfterFunc(r.ctx, func() {
		r.mu.Lock()
		if r.err == nil {
			r.err = r.ctx.Err()
		}
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	r.stop = stop
	r.init = map[int]*rangeBody{0: first, 1: probe}
	r.wg.Add(conns)
	for w := 0; w < conns; w++ {
		go r.worker()
	}
	return r, h.size, nil
}

// rangeReader reads an image as ranges over several connections (see above).
type rangeReader struct {
	ctx           context.Context
	cancel        context.CancelFunc
	stop          func() bool
	opt           *Options
	url           string
	client        *http.Client
	size, chunk   int64
	etag, lastMod string
	conns         int
	nchunks       int
	window        int
	wg            sync.WaitGroup

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
	r.stop()
	for _, b := range r.init {
		b.close()
	}
	return nil
}

// fetch fills buf with chunk i, from body when it is given (an answer
// already open at the chunk's start), resuming after dropped connections.
func (r *rangeReader) fetch(i int, buf []byte, body *rangeBody) ([]byte, error) {
	start := int64(i) * r.chunk
	end := min(start+r.chunk, r.size)
	buf = buf[:end-start]
	got := 0
	stalls := 0
	for got < len(buf) {
		if body == nil {
			var err error
			if body, err = r.requestRetry(start+int64(got), end); err != nil {
				return nil, err
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
		if errors.Is(err, errRangeFatal) {
			return nil, fmt.Errorf("%w: %s: bytes %d-%d: %w", ErrHTTP, r.url, start, end-1, err)
		}
		r.opt.logf("%s: connection lost at byte %d (range %d-%d): %v", r.url, pos, start, end-1, err)
		if progress {
			stalls = 0
		} else {
			stalls++
		}
		if stalls > r.opt.Retries {
			return nil, fmt.Errorf("%w: %s: giving up after %d dropped connections in a row at byte %d: %v", ErrHTTP, r.url, stalls, pos, err)
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
// connection errors and 5xx/429 answers.
func (r *rangeReader) requestRetry(off, end int64) (*rangeBody, error) {
	delay := r.opt.RetryDelay
	var last error
	for attempt := 0; attempt <= r.opt.Retries; attempt++ {
		if attempt > 0 {
			r.opt.logf("%s: range %d-%d: retrying in %v (%d/%d): %v", r.url, off, end-1, delay, attempt, r.opt.Retries, last)
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
	return nil, fmt.Errorf("%w: %s: range %d-%d: giving up after %d retries: %w", ErrHTTP, r.url, off, end-1, r.opt.Retries, last)
}

// retryable wraps an error that trying again may mend.
type retryable struct{ err error }

func (e *retryable) Error() string { return e.err.Error() }
func (e *retryable) Unwrap() error { return e.err }

// request makes one request for bytes [off, end) and checks the answer.
func (r *rangeReader) request(off, end int64) (*rangeBody, error) {
	rctx, cancel := context.WithCancel(r.ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, r.url, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %s: %w", ErrHTTP, r.url, err)
	}
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end-1))
	// If-Range needs a strong validator; a weak ETag would make every
	// answer a 200.
	if r.etag != "" && !strings.HasPrefix(r.etag, "W/") {
		req.Header.Set("If-Range", r.etag)
	} else if r.lastMod != "" {
		req.Header.Set("If-Range", r.lastMod)
	}
	var late atomic.Bool
	timer := time.AfterFunc(r.opt.ConnectTimeout, func() { late.Store(true); cancel() })
	resp, err := r.client.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		if r.ctx.Err() != nil {
			return nil, r.ctx.Err()
		}
		if late.Load() {
			return nil, &retryable{fmt.Errorf("no answer within %v (connect, TLS handshake, response headers)", r.opt.ConnectTimeout)}
		}
		return nil, &retryable{err}
	}
	fail := func(e error) (*rangeBody, error) {
		resp.Body.Close()
		cancel()
		return nil, e
	}
	what := fmt.Sprintf("range %d-%d", off, end-1)
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		why := "the server ignored the Range request (answered 200 instead of 206)"
		if changed := r.changed(resp); changed != "" {
			why = changed
		} else if r.etag != "" || r.lastMod != "" {
			why = "the image changed on the server, or it ignored the Range request (If-Range answered 200 instead of 206)"
		}
		return fail(fmt.Errorf("%w: %s: %s: %s", ErrHTTP, r.url, what, why))
	default:
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return fail(&retryable{fmt.Errorf("server answered %s", resp.Status)})
		}
		return fail(fmt.Errorf("%w: %s: %s: server answered %s", ErrHTTP, r.url, what, resp.Status))
	}
	if changed := r.changed(resp); changed != "" {
		return fail(fmt.Errorf("%w: %s: %s: %s", ErrHTTP, r.url, what, changed))
	}
	start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
	if !ok || start != off || (resp.ContentLength >= 0 && resp.ContentLength != end-off) {
		return fail(fmt.Errorf("%w: %s: %s: bad answer (Content-Range %q, Content-Length %d)", ErrHTTP, r.url, what, resp.Header.Get("Content-Range"), resp.ContentLength))
	}
	if total != r.size {
		return fail(fmt.Errorf("%w: %s: the image changed on the server: its size is now %d, was %d", ErrHTTP, r.url, total, r.size))
	}
	return &rangeBody{body: resp.Body, cancel: cancel, idle: newIdleWatch(r.opt.IdleTimeout, off, cancel), off: off, end: end}, nil
}

// changed says how an answer's validators differ from the first answer's
// ("" when they match or are missing).
func (r *rangeReader) changed(resp *http.Response) string {
	if et := resp.Header.Get("ETag"); r.etag != "" && et != "" && et != r.etag {
		return fmt.Sprintf("the image changed on the server (ETag %s, was %s)", et, r.etag)
	}
	if lm := resp.Header.Get("Last-Modified"); r.lastMod != "" && lm != "" && lm != r.lastMod {
		return fmt.Sprintf("the image changed on the server (Last-Modified %s, was %s)", lm, r.lastMod)
	}
	return ""
}
