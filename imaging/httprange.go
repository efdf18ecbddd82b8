package imaging

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/esxi-rescue/rescue/gpt"
)

// Parallel ranged downloads of http(s) images: the range engine
// (rangeread.go) with HTTP range requests. Every chunk is checked: it
// must come as 206 with the Content-Range asked for, the image's total
// size, and the ETag / Last-Modified of the first answer (If-Range asks
// the server to send the whole image instead when it changed, which is
// refused too); 5xx and 429 answers and connection errors are retried.

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
	conns, chunk := opt.rangeParams()
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
	hr := &httpRanges{url: h.url, client: client, size: h.size, etag: h.etag, lastMod: h.lastMod}
	r := newRangeReader(ctx, opt, h.url, ErrHTTP, h.size, chunk, conns, hr.open)
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
	r.start(map[int]*rangeBody{0: first, 1: probe})
	return r, h.size, nil
}

// httpRanges asks an HTTP server for ranges of one image.
type httpRanges struct {
	url           string
	client        *http.Client
	size          int64
	etag, lastMod string
}

// open makes one request for bytes [off, end) and checks the answer (an openRange).
func (r *httpRanges) open(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
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
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, &retryable{err}
	}
	fail := func(e error) (io.ReadCloser, error) {
		resp.Body.Close()
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
	return resp.Body, nil
}

// changed says how an answer's validators differ from the first answer's
// ("" when they match or are missing).
func (r *httpRanges) changed(resp *http.Response) string {
	if et := resp.Header.Get("ETag"); r.etag != "" && et != "" && et != r.etag {
		return fmt.Sprintf("the image changed on the server (ETag %s, was %s)", et, r.etag)
	}
	if lm := resp.Header.Get("Last-Modified"); r.lastMod != "" && lm != "" && lm != r.lastMod {
		return fmt.Sprintf("the image changed on the server (Last-Modified %s, was %s)", lm, r.lastMod)
	}
	return ""
}
