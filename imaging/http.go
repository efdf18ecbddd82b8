package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpReader reads a URL and resumes with a Range request after a dropped
// connection. It refuses to resume (with a clear error) when the server does
// not support ranges or the resource changed (ETag / Last-Modified).
type httpReader struct {
	ctx     context.Context
	opt     *Options
	url     string
	body    io.ReadCloser
	off     int64
	size    int64 // -1 when unknown
	etag    string
	lastMod string
	ranges  bool // server announced Accept-Ranges: bytes
	resumes int
	// stalls counts drops in a row with no byte received since the last
	// (re)connect; more than Retries of them ends the transfer.
	stalls   int
	progress bool
	// The request being read: its cancel (ends a stalled body), whether
	// the idle watchdog fired, and how much this connection brought.
	cancel  context.CancelFunc
	idle    *idleWatch
	connOff int64
	err     error // the error that ended the download
	// mu guards body, cancel, idle and closed against Close, which may
	// come from another goroutine while a read is blocked (a zstd
	// decoder reading ahead when the restore is done or stops).
	mu     sync.Mutex
	closed bool
}

// minIdleBytes is how much an HTTP download must receive per IdleTimeout
// not to count as stalled (a byte every few seconds is a hang, too).
const minIdleBytes = 64 << 10

// defaultHTTPClient downloads images: no keep-alive, so a connection is
// never pooled after its response and bytes a broken server sends past the
// body are dropped with it (an idle pooled connection that receives them
// makes net/http log "Unsolicited response received on idle HTTP channel"
// with the bytes to the standard logger, i.e. stderr).
var defaultHTTPClient = &http.Client{Transport: func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableKeepAlives = true
	return t
}()}

// idleWatch cancels a request when its body brings fewer than
// minIdleBytes in timeout of reading: time spent outside Read (the disk
// being slow) does not count.
type idleWatch struct {
	timeout time.Duration
	timer   *time.Timer
	fired   atomic.Bool
	mark    int64         // offset at the start of the current window
	left    time.Duration // reading time left in the window
}

func newIdleWatch(timeout time.Duration, off int64, cancel context.CancelFunc) *idleWatch {
	w := &idleWatch{timeout: timeout, mark: off, left: timeout}
	w.timer = time.AfterFunc(time.Hour, func() { w.fired.Store(true); cancel() })
	w.timer.Stop()
	return w
}

// start arms the watchdog before a read at off.
func (w *idleWatch) start(off int64) time.Time {
	if off-w.mark >= minIdleBytes {
		w.mark, w.left = off, w.timeout
	}
	w.timer.Reset(max(w.left, time.Millisecond))
	return time.Now()
}

// stop disarms it after a read that began at t0.
func (w *idleWatch) stop(t0 time.Time) {
	w.timer.Stop()
	w.left -= time.Since(t0)
}

func (w *idleWatch) close() {
	if w != nil {
		w.timer.Stop()
	}
}

// ErrHTTP is wrapped by errors about the HTTP transfer.
var ErrHTTP = errors.New("http")

func openHTTP(ctx context.Context, opt *Options) (*httpReader, error) {
	h := &httpReader{ctx: ctx, opt: opt, url: opt.Src, size: -1}
	if err := h.connect(); err != nil {
		return nil, err
	}
	if h.size < 0 {
		opt.logf("%s: the server sent no length: a connection closed early cannot be told from the end of the image (compressed images and GPT images are still checked; use -sha256)", h.url)
	}
	return h, nil
}

// connect (re)opens the body at h.off, retrying with back-off.
func (h *httpReader) connect() error {
	delay := h.opt.RetryDelay
	var last error
	for attempt := 0; attempt <= h.opt.Retries; attempt++ {
		if attempt > 0 {
			h.opt.logf("%s: retrying in %v (%d/%d): %v", h.url, delay, attempt, h.opt.Retries, last)
			select {
			case <-time.After(delay):
			case <-h.ctx.Done():
				return h.ctx.Err()
			}
			delay *= 2
		}
		err, retry := h.try()
		if err == nil {
			return nil
		}
		if !retry {
			return err
		}
		last = err
	}
	if h.opt.Retries == 0 {
		return fmt.Errorf("%w: %s: %w (not retried: retries 0)", ErrHTTP, h.url, last)
	}
	return fmt.Errorf("%w: %s: giving up after %d retries: %w", ErrHTTP, h.url, h.opt.Retries, last)
}

// try makes one request; retry says whether trying again could help.
func (h *httpReader) try() (err error, retry bool) {
	rctx, cancel := context.WithCancel(h.ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, h.url, nil)
	if err != nil {
		cancel()
		return fmt.Errorf("%w: %s: %w", ErrHTTP, h.url, err), false
	}
	// The image is decompressed by us, not by the transport.
	req.Header.Set("Accept-Encoding", "identity")
	if h.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", h.off))
		if h.etag != "" {
			req.Header.Set("If-Range", h.etag)
		} else if h.lastMod != "" {
			req.Header.Set("If-Range", h.lastMod)
		}
	}
	// The connect timeout: dial, TLS handshake and response headers,
	// whatever client is used.
	var late atomic.Bool
	timer := time.AfterFunc(h.opt.ConnectTimeout, func() { late.Store(true); cancel() })
	resp, err := h.opt.HTTPClient.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		if h.ctx.Err() != nil {
			return h.ctx.Err(), false
		}
		if late.Load() {
			return fmt.Errorf("%w: %s: no answer within %v (connect, TLS handshake, response headers)", ErrHTTP, h.url, h.opt.ConnectTimeout), true
		}
		return err, true
	}
	fail := func(e error, retry bool) (error, bool) {
		resp.Body.Close()
		cancel()
		return e, retry
	}
	accept := func() (error, bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.closed {
			resp.Body.Close()
			cancel()
			return fmt.Errorf("%w: %s: closed", ErrHTTP, h.url), false
		}
		h.body, h.cancel, h.connOff = resp.Body, cancel, h.off
		h.idle = newIdleWatch(h.opt.IdleTimeout, h.off, cancel)
		return nil, false
	}
	if h.off == 0 {
		if resp.StatusCode != http.StatusOK {
			e := fmt.Errorf("%w: %s: server answered %s", ErrHTTP, h.url, resp.Status)
			return fail(e, resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests)
		}
		h.size = resp.ContentLength
		h.etag = resp.Header.Get("ETag")
		h.lastMod = resp.Header.Get("Last-Modified")
		h.ranges = strings.Contains(strings.ToLower(resp.Header.Get("Accept-Ranges")), "bytes")
		return accept()
	}
	// Resuming.
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		why := "the server ignored the Range request (answered 200 instead of 206)"
		if h.etag != "" && resp.Header.Get("ETag") != "" && resp.Header.Get("ETag") != h.etag {
			why = fmt.Sprintf("the image changed on the server (ETag %s, was %s)", resp.Header.Get("ETag"), h.etag)
		}
		return fail(fmt.Errorf("%w: %s: connection dropped at byte %d and cannot resume: %s", ErrHTTP, h.url, h.off, why), false)
	case http.StatusRequestedRangeNotSatisfiable:
		return fail(fmt.Errorf("%w: %s: cannot resume at byte %d: server answered %s", ErrHTTP, h.url, h.off, resp.Status), false)
	default:
		e := fmt.Errorf("%w: %s: resuming at byte %d: server answered %s", ErrHTTP, h.url, h.off, resp.Status)
		return fail(e, resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests)
	}
	if et := resp.Header.Get("ETag"); h.etag != "" && et != "" && et != h.etag {
		return fail(fmt.Errorf("%w: %s: cannot resume: the image changed on the server (ETag %s, was %s)", ErrHTTP, h.url, et, h.etag), false)
	}
	start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
	if !ok || start != h.off {
		return fail(fmt.Errorf("%w: %s: cannot resume at byte %d: bad Content-Range %q", ErrHTTP, h.url, h.off, resp.Header.Get("Content-Range")), false)
	}
	if h.size >= 0 && total >= 0 && total != h.size {
		return fail(fmt.Errorf("%w: %s: cannot resume: the image size changed from %d to %d", ErrHTTP, h.url, h.size, total), false)
	}
	h.resumes++
	h.opt.logf("%s: resumed at byte %d", h.url, h.off)
	return accept()
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*" → -1).
func parseContentRange(s string) (start, total int64, ok bool) {
	s, found := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

// Read returns the image's bytes. An error is sticky: a caller that reads
// on after one (bufio.Reader.Peek drops an error when enough bytes came
// before it) gets the same error again, not a vaguer one.
func (h *httpReader) Read(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	n, err := h.read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		h.err = err
	}
	return n, err
}

func (h *httpReader) read(p []byte) (int, error) {
	for {
		h.mu.Lock()
		body, idle, closed := h.body, h.idle, h.closed
		h.mu.Unlock()
		if closed {
			return 0, fmt.Errorf("%w: %s: closed", ErrHTTP, h.url)
		}
		if body == nil {
			return 0, fmt.Errorf("%w: %s: not connected", ErrHTTP, h.url)
		}
		t0 := idle.start(h.off)
		n, err := body.Read(p)
		idle.stop(t0)
		h.off += int64(n)
		// Progress: this connection brought a useful amount (a trickle
		// of bytes between stalls is no progress).
		if h.off-h.connOff >= minIdleBytes || (n > 0 && h.size >= 0 && h.off == h.size) {
			h.progress = true
		}
		if h.size >= 0 && h.off > h.size {
			return n, fmt.Errorf("%w: %s: the server sent more than the %d bytes it announced", ErrHTTP, h.url, h.size)
		}
		if err == nil {
			return n, nil
		}
		if errors.Is(err, io.EOF) && (h.size < 0 || h.off == h.size) {
			return n, io.EOF
		}
		if h.ctx.Err() != nil {
			return n, h.ctx.Err()
		}
		h.mu.Lock()
		closed = h.closed
		h.mu.Unlock()
		if closed { // Close ended the read: no resuming
			return n, fmt.Errorf("%w: %s: closed", ErrHTTP, h.url)
		}
		if idle.fired.Load() {
			err = fmt.Errorf("less than %s arrived in %v: the server stalled", "64 KiB", h.opt.IdleTimeout)
		}
		// The connection dropped (or ended early): resume from h.off.
		h.closeBody()
		h.opt.logf("%s: connection lost at byte %d: %v", h.url, h.off, err)
		if !h.ranges {
			return n, fmt.Errorf("%w: %s: connection lost at byte %d and the server does not support resuming (no Accept-Ranges: bytes): %v", ErrHTTP, h.url, h.off, err)
		}
		if h.opt.Retries == 0 {
			return n, fmt.Errorf("%w: %s: connection lost at byte %d, not resumed (retries 0): %v", ErrHTTP, h.url, h.off, err)
		}
		if h.progress {
			h.stalls = 0
		} else {
			h.stalls++
		}
		if h.stalls > h.opt.Retries {
			return n, fmt.Errorf("%w: %s: giving up after %d dropped connections in a row at byte %d: %v", ErrHTTP, h.url, h.stalls, h.off, err)
		}
		if h.stalls > 0 {
			d := h.opt.RetryDelay << min(h.stalls-1, 6)
			select {
			case <-time.After(d):
			case <-h.ctx.Done():
				return n, h.ctx.Err()
			}
		}
		h.progress = false
		if cerr := h.connect(); cerr != nil {
			return n, cerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// closeBody ends the current request.
func (h *httpReader) closeBody() error {
	h.mu.Lock()
	body, idle, cancel := h.body, h.idle, h.cancel
	h.body, h.idle, h.cancel = nil, nil, nil
	h.mu.Unlock()
	var err error
	if body != nil {
		err = body.Close()
	}
	idle.close()
	if cancel != nil {
		cancel()
	}
	return err
}

// Close ends the download; a read blocked meanwhile (in another
// goroutine) returns an error and does not resume.
func (h *httpReader) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	return h.closeBody()
}
