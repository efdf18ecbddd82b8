package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

// dropWriter aborts the response after limit bytes, as a dropped
// connection would (the client sees a short body).
type dropWriter struct {
	http.ResponseWriter
	limit int64
	n     int64
}

func (d *dropWriter) Write(p []byte) (int, error) {
	if d.n+int64(len(p)) > d.limit {
		k := d.limit - d.n
		d.ResponseWriter.Write(p[:k])
		d.n += k
		if f, ok := d.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler)
	}
	d.n += int64(len(p))
	return d.ResponseWriter.Write(p)
}

// imageServer serves data; drops lists, per request, after how many bytes
// to drop the connection (-1 or missing: serve fully).
type imageServer struct {
	data     []byte
	etag     string
	drops    []int64
	noRanges bool  // a server without range support: no Accept-Ranges, ignores Range
	lieRange bool  // announces ranges but answers 200 to a Range request
	changeAt int   // from this request on, the ETag changes (0: never)
	status   []int // per request: answer this status instead (0: normal)
	requests atomic.Int32
	mu       sync.Mutex
	ranges   []string
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(s.requests.Add(1)) - 1
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.mu.Unlock()
	if i < len(s.status) && s.status[i] != 0 {
		http.Error(w, http.StatusText(s.status[i]), s.status[i])
		return
	}
	etag := s.etag
	if s.changeAt > 0 && i >= s.changeAt {
		etag = `"changed"`
	}
	if i < len(s.drops) && s.drops[i] >= 0 {
		w = &dropWriter{ResponseWriter: w, limit: s.drops[i]}
	}
	switch {
	case s.noRanges || s.lieRange:
		if s.lieRange {
			w.Header().Set("Accept-Ranges", "bytes")
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(s.data)))
		w.Header().Set("ETag", etag)
		w.WriteHeader(http.StatusOK)
		w.Write(s.data)
	default:
		w.Header().Set("ETag", etag)
		http.ServeContent(w, r, "image", time.Unix(1e9, 0), bytes.NewReader(s.data))
	}
}

// httpImage makes a test image of size bytes (makeImage with density and
// seed) and its zstd compression by zstd(1): the image's file and the
// bytes of both.
func httpImage(t *testing.T, size int64, density float64, seed uint64) (raw string, plain, zst []byte) {
	t.Helper()
	raw = t.TempDir() + "/img"
	makeImage(t, raw, size, 64<<10, density, seed)
	gpttest.Run(t, "zstd", "-q", raw, "-o", raw+".zst")
	plain, _ = os.ReadFile(raw)
	zst, _ = os.ReadFile(raw + ".zst")
	return raw, plain, zst
}

// wantHTTPError fails the test unless err is an ErrHTTP containing want,
// and checks that the image's start was not written to dst.
func wantHTTPError(t *testing.T, err error, want, dst string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrHTTP) {
		t.Fatalf("want an HTTP error containing %q, got %v", want, err)
	}
	t.Logf("error (as expected): %v", err)
	if b, _ := os.ReadFile(dst); len(b) > 0 && !zeros.Is(b[:min(len(b), 1<<20)]) {
		t.Errorf("the image's start was written despite the failure")
	}
}

// checkHTTPCopy fails the test unless the Copy (res, err) succeeded, dst
// is raw byte for byte (cmp) and res has plain's SHA-256.
func checkHTTPCopy(t *testing.T, res *Result, err error, raw, dst string, plain []byte) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	cmpFiles(t, raw, dst, -1)
	if res.SHA256 != sha256Of(plain) {
		t.Errorf("SHA256 mismatch")
	}
}

func httpOpts(t *testing.T, url, dst string) Options {
	opt := copyOpts(t, url, dst)
	opt.RetryDelay = 10 * time.Millisecond
	opt.Retries = 3
	opt.HTTPConns = 1 // one stream; rangeOpts tests ranges
	return opt
}

func TestHTTP(t *testing.T) {
	gpttest.Need(t, "zstd", "cmp")
	raw, plain, zst := httpImage(t, 6<<20, 0.6, 21)
	for _, tc := range []struct {
		name    string
		srv     *imageServer
		wantErr string // empty: must succeed
		minReq  int32
	}{
		{name: "plain", srv: &imageServer{data: plain}},
		{name: "zstd", srv: &imageServer{data: zst}},
		{name: "drops-resumed", srv: &imageServer{data: plain, drops: []int64{1 << 20, 100, 3 << 20}}, minReq: 4},
		{name: "zstd-drops-resumed", srv: &imageServer{data: zst, drops: []int64{777777, 1234567}}, minReq: 3},
		{name: "drop-in-first-bytes", srv: &imageServer{data: plain, drops: []int64{10}}, minReq: 2},
		{name: "resume-after-500", srv: &imageServer{data: plain, drops: []int64{2 << 20}, status: []int{0, 500, 503}}, minReq: 4},
		{name: "no-ranges", srv: &imageServer{data: plain, noRanges: true, drops: []int64{2 << 20}}, wantErr: "does not support resuming"},
		{name: "ranges-ignored", srv: &imageServer{data: plain, lieRange: true, drops: []int64{2 << 20}}, wantErr: "answered 200 instead of 206"},
		{name: "etag-changed", srv: &imageServer{data: plain, etag: `"v1"`, changeAt: 1, drops: []int64{2 << 20}}, wantErr: "changed"},
		{name: "404", srv: &imageServer{data: plain, status: []int{404}}, wantErr: "404 Not Found"},
		{name: "500-persistent", srv: &imageServer{data: plain, status: []int{500, 500, 500, 500, 500}}, wantErr: "giving up after 3 retries"},
		{name: "drops-forever", srv: &imageServer{data: plain, drops: []int64{1 << 20, 0, 0, 0, 0, 0, 0, 0, 0}}, wantErr: "giving up after 4 dropped connections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.srv)
			defer srv.Close()
			dst := t.TempDir() + "/out"
			res, err := Copy(context.Background(), httpOpts(t, srv.URL+"/image", dst))
			if tc.wantErr != "" {
				wantHTTPError(t, err, tc.wantErr, dst)
				return
			}
			checkHTTPCopy(t, res, err, raw, dst, plain)
			if got := tc.srv.requests.Load(); got < tc.minReq {
				tc.srv.mu.Lock()
				t.Errorf("%d requests, want at least %d (ranges %q)", got, tc.minReq, tc.srv.ranges)
				tc.srv.mu.Unlock()
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 0-0/*", 0, -1, true},
		{"bytes */200", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, tot, ok := parseContentRange(tc.in)
		if ok != tc.ok || (ok && (s != tc.start || tot != tc.total)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %v", tc.in, s, tot, ok)
		}
	}
}
