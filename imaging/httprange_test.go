// Tests of the parallel ranged HTTP download (httprange.go) against fault
// servers, a file changed mid-download, memory bounds and real nginx. The
// file is over 500 lines because its fault servers (faultServer,
// stallWriter, cuttingProxy, startNginx) serve only these tests and are
// read with them.

package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

// rangeOpts are httpOpts for parallel ranged downloads in small chunks.
func rangeOpts(t *testing.T, url, dst string, chunk int64) Options {
	opt := httpOpts(t, url, dst)
	opt.HTTPConns, opt.httpChunk = 4, chunk
	return opt
}

// faultServer serves data with http.ServeContent (ranges, If-Range) under
// a fixed ETag and Last-Modified; fault decides, per request (its number
// and the first byte asked for), to cut the body after some bytes (cut >=
// 0), answer a status, or stall until the client gives up.
type faultServer struct {
	data  []byte
	etag  string
	fault func(i int, start int64) (cut int64, status int, stall bool)
	n     atomic.Int32
	mu    sync.Mutex
	asked []string // the Range headers, in order
}

func (s *faultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(s.n.Add(1)) - 1
	rg := r.Header.Get("Range")
	s.mu.Lock()
	s.asked = append(s.asked, rg)
	s.mu.Unlock()
	start := int64(0)
	if a, _, ok := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-"); ok {
		start, _ = strconv.ParseInt(a, 10, 64)
	}
	if s.fault != nil {
		cut, status, stall := s.fault(i, start)
		switch {
		case status != 0:
			http.Error(w, http.StatusText(status), status)
			return
		case stall:
			w = &stallWriter{ResponseWriter: w, limit: cut, r: r}
		case cut >= 0:
			w = &dropWriter{ResponseWriter: w, limit: cut}
		}
	}
	w.Header().Set("ETag", s.etag)
	http.ServeContent(w, r, "image", time.Unix(1e9, 0), bytes.NewReader(s.data))
}

// stallWriter sends limit bytes, then nothing until the client goes away.
type stallWriter struct {
	http.ResponseWriter
	limit, n int64
	r        *http.Request
}

func (d *stallWriter) Write(p []byte) (int, error) {
	if d.n+int64(len(p)) > d.limit {
		d.ResponseWriter.Write(p[:d.limit-d.n])
		d.n = d.limit
		flush(d.ResponseWriter)
		hang(d.r)
		return 0, errors.New("stalled")
	}
	d.n += int64(len(p))
	return d.ResponseWriter.Write(p)
}

func (s *faultServer) ranged() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.asked {
		if a != "" {
			n++
		}
	}
	return n
}

// TestHTTPRanges restores images over 4 connections in 256 KiB ranges from
// servers that cut connections inside ranges, answer 5xx, stall, change
// the image, or do not support ranges; a copy that succeeds is compared
// with cmp(1) and its SHA-256 with the image's.
func TestHTTPRanges(t *testing.T) {
	gpttest.Need(t, "zstd", "cmp")
	raw, plain, zst := httpImage(t, 12<<20, 0.7, 33)
	const chunk = 256 << 10
	nth := func(cuts map[int]int64) func(int, int64) (int64, int, bool) {
		var mu sync.Mutex
		return func(i int, start int64) (int64, int, bool) {
			mu.Lock()
			defer mu.Unlock()
			if c, ok := cuts[i]; ok {
				return c, 0, false
			}
			return -1, 0, false
		}
	}
	var stalled atomic.Bool
	for _, tc := range []struct {
		name    string
		h       http.Handler
		data    []byte
		wantErr string
		ranged  bool // parallel ranges must have been used
	}{
		{name: "plain", h: &faultServer{data: plain, etag: `"a"`}, ranged: true},
		{name: "zstd", h: &faultServer{data: zst, etag: `"a"`}, ranged: true},
		{name: "no-etag (Last-Modified)", h: &faultServer{data: plain}, ranged: true},
		{name: "cut inside ranges", h: &faultServer{data: plain, etag: `"a"`, fault: nth(map[int]int64{0: 100000, 2: 7, 3: 200000, 5: 0, 6: 131072, 9: 1})}, ranged: true},
		{name: "zstd cut inside ranges", h: &faultServer{data: zst, etag: `"a"`, fault: nth(map[int]int64{1: 5000, 4: 250000, 8: 0})}, ranged: true},
		{name: "5xx then fine", h: &faultServer{data: plain, etag: `"a"`, fault: func(i int, start int64) (int64, int, bool) {
			if i >= 2 && i < 6 {
				return -1, 503, false
			}
			return -1, 0, false
		}}, ranged: true},
		{name: "stalls once inside a range", h: &faultServer{data: plain, etag: `"a"`, fault: func(i int, start int64) (int64, int, bool) {
			if start == 7*chunk && stalled.CompareAndSwap(false, true) {
				return 70000, 0, true
			}
			return -1, 0, false
		}}, ranged: true},
		{name: "one range always cut", h: &faultServer{data: plain, etag: `"a"`, fault: func(i int, start int64) (int64, int, bool) {
			if start >= 9*chunk && start < 10*chunk {
				return 10, 0, false
			}
			return -1, 0, false
		}}, wantErr: "giving up after 4 dropped connections"},
		{name: "one range always 500", h: &faultServer{data: plain, etag: `"a"`, fault: func(i int, start int64) (int64, int, bool) {
			if start == 11*chunk {
				return -1, 500, false
			}
			return -1, 0, false
		}}, wantErr: "giving up after 3 retries"},
		{name: "one range 404", h: &faultServer{data: plain, etag: `"a"`, fault: func(i int, start int64) (int64, int, bool) {
			if start == 11*chunk {
				return -1, 404, false
			}
			return -1, 0, false
		}}, wantErr: "404 Not Found"},
		{name: "etag changes", h: &imageServer{data: plain, etag: `"v1"`, changeAt: 6}, wantErr: "changed on the server"},
		{name: "ranges ignored (200): one stream", h: &imageServer{data: plain, lieRange: true}},
		{name: "no ranges: one stream", h: &imageServer{data: plain, noRanges: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.h)
			defer srv.Close()
			dst := t.TempDir() + "/out"
			opt := rangeOpts(t, srv.URL+"/image", dst, chunk)
			opt.IdleTimeout = 500 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := Copy(ctx, opt)
			if tc.wantErr != "" {
				wantHTTPError(t, err, tc.wantErr, dst)
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("the error has more than one line: %q", err)
				}
				return
			}
			checkHTTPCopy(t, res, err, raw, dst, plain)
			if fs, ok := tc.h.(*faultServer); ok && tc.ranged {
				// The first chunk comes with the first (whole) answer.
				if n := fs.ranged(); n < len(fs.data)/chunk-1 {
					t.Errorf("%d ranged requests for %d chunks", n, len(fs.data)/chunk)
				}
			}
		})
	}
}

// TestHTTPRangesFileChanges: an image file served by http.FileServer is
// replaced (same size, new modification time) in the middle of a parallel
// download: the restore fails naming the change, and the target's start
// stays unwritten. Without the change, the copy is byte-identical.
func TestHTTPRangesFileChanges(t *testing.T) {
	gpttest.Need(t, "cmp")
	dir := t.TempDir()
	img := filepath.Join(dir, "esxi.img")
	makeImage(t, img, 8<<20, 64<<10, 0.8, 5)
	orig, _ := os.ReadFile(img)
	var n atomic.Int32
	var change atomic.Bool
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 8 && change.Load() {
			b := bytes.Clone(orig)
			b[len(b)-1] ^= 0xff
			if err := os.WriteFile(img, b, 0o644); err != nil {
				t.Error(err)
			}
			os.Chtimes(img, time.Now(), time.Now().Add(time.Hour))
		}
		fs.ServeHTTP(w, r)
	}))
	defer srv.Close()

	dst := t.TempDir() + "/out"
	mustCopy(t, rangeOpts(t, srv.URL+"/esxi.img", dst, 128<<10))
	cmpFiles(t, img, dst, -1)
	if n.Load() < 10 {
		t.Errorf("only %d requests: ranges not used", n.Load())
	}

	change.Store(true)
	n.Store(0)
	dst = t.TempDir() + "/out"
	_, err := Copy(context.Background(), rangeOpts(t, srv.URL+"/esxi.img", dst, 128<<10))
	if err == nil || !errors.Is(err, ErrHTTP) || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("want an error saying the image changed, got %v", err)
	}
	t.Logf("error (as expected): %v", err)
	if b, _ := os.ReadFile(dst); len(b) > 0 && !zeros.Is(b[:min(len(b), 1<<20)]) {
		t.Errorf("the image's start was written despite the failure")
	}
}

// TestHTTPRangesBoundedMemory: with a reader slower than the network, the
// download holds at most HTTPConns+1 chunks, and the bytes come in order.
func TestHTTPRangesBoundedMemory(t *testing.T) {
	data := make([]byte, 6<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	srv := httptest.NewServer(&faultServer{data: data, etag: `"m"`})
	defer srv.Close()
	opt := rangeOpts(t, srv.URL+"/img", "", 64<<10)
	opt.defaults()
	r, size, err := openHTTPSource(context.Background(), &opt)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rr, ok := r.(*rangeReader)
	if !ok || size != int64(len(data)) {
		t.Fatalf("got %T of size %d, want a rangeReader of %d", r, size, len(data))
	}
	var got bytes.Buffer
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if got.Len()%(1<<20) < len(buf) {
			time.Sleep(20 * time.Millisecond) // let the workers run ahead
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("the reassembled stream differs")
	}
	rr.mu.Lock()
	allocs := rr.allocs
	rr.mu.Unlock()
	if allocs > opt.HTTPConns+1 || allocs < 2 {
		t.Errorf("%d chunk buffers allocated, want 2..%d", allocs, opt.HTTPConns+1)
	}
}

// TestHTTPRangesNginx restores from Debian's nginx on loopback (a stock
// server: its own ETag, Last-Modified and range code), directly and
// through a proxy that cuts every connection after 1.5 MiB, over 4
// connections in 1 MiB ranges; the copies are compared with cmp(1).
func TestHTTPRangesNginx(t *testing.T) {
	gpttest.Need(t, "cmp", "zstd")
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/nginx"); e != nil {
			t.Skip("no nginx (apt-get install nginx-light)")
		}
		nginx = "/usr/sbin/nginx"
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	raw := filepath.Join(dir, "esxi.img")
	makeImage(t, raw, 24<<20, 64<<10, 0.6, 9)
	gpttest.Run(t, "zstd", "-q", raw, "-o", raw+".zst")
	os.Chmod(raw+".zst", 0o644)
	addr := startNginx(t, nginx, dir)

	proxy := cuttingProxy(t, addr, 3<<19)
	for _, tc := range []struct{ name, host string }{{"direct", addr}, {"cut every 1.5 MiB", proxy}} {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir() + "/out"
			opt := rangeOpts(t, "http://"+tc.host+"/esxi.img.zst", dst, 1<<20)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res, err := Copy(ctx, opt)
			if err != nil {
				t.Fatal(err)
			}
			cmpFiles(t, raw, dst, -1)
			if want := sha256sum(t, raw); res.SHA256 != want {
				t.Errorf("SHA-256 %s, sha256sum says %s", res.SHA256, want)
			}
		})
	}
}

// startNginx runs nginx on a free loopback port with a configuration of
// its own serving root, stopped when the test ends; it returns host:port.
func startNginx(t *testing.T, nginx, root string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := t.TempDir()
	cfg := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	sendfile on;
	server {
		listen %[2]s;
		root %[3]s;
	}
}
`, conf, addr, root)
	if err := os.WriteFile(conf+"/nginx.conf", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", conf, "-c", conf+"/nginx.conf", "-e", conf+"/error.log")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if i == 100 {
			log, _ := os.ReadFile(conf + "/error.log")
			t.Fatalf("nginx did not start: %s %s", out.String(), log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cuttingProxy forwards loopback TCP connections to addr and cuts each one
// after limit bytes from the server; it returns its host:port.
func cuttingProxy(t *testing.T, addr string, limit int64) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		s, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer s.Close()
		go io.Copy(s, c)
		io.CopyN(c, s, limit)
	})
}

// TestHTTPReaderErrorSticky: after a download failed, reading on returns
// the same error (decompress's Peek drops an error that came after enough
// bytes; the next read must not turn it into a vaguer one).
func TestHTTPReaderErrorSticky(t *testing.T) {
	srv := httptest.NewServer(&imageServer{data: bytes.Repeat([]byte("x"), 1<<20), noRanges: true, drops: []int64{100}})
	defer srv.Close()
	opt := httpOpts(t, srv.URL+"/img", "")
	opt.defaults()
	h, err := openHTTP(context.Background(), &opt)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_, err1 := io.ReadAll(h)
	_, err2 := h.Read(make([]byte, 10))
	if err1 == nil || err2 == nil || err1.Error() != err2.Error() || !strings.Contains(err2.Error(), "does not support resuming") {
		t.Errorf("first error %v, then %v", err1, err2)
	}
}

// FuzzHTTPRanges: a server whose every answer to a ranged request is
// decided by the fuzzer (cut short, wrong start or total in Content-Range,
// another ETag, 200 instead of 206, 5xx, 404, bytes past the range). The
// download either returns exactly the image or fails with ErrHTTP in a
// bounded time; it never returns other bytes.
func FuzzHTTPRanges(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{1, 50, 0, 2, 0, 3})
	f.Add([]byte{4, 5, 6, 7, 8, 9})
	f.Add([]byte{0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	data := make([]byte, 40<<10)
	for i := range data {
		data[i] = byte(i*13 + i>>8)
	}
	f.Fuzz(func(t *testing.T, plan []byte) {
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			i := int(n.Add(1)) - 1
			op, arg := byte(0), byte(0)
			if 2*i+1 < len(plan) {
				op, arg = plan[2*i]%9, plan[2*i+1]
			}
			w.Header().Set("ETag", `"f"`)
			rg := r.Header.Get("Range")
			if rg == "" || op == 0 {
				http.ServeContent(w, r, "img", time.Unix(1e9, 0), bytes.NewReader(data))
				return
			}
			var a, b int64
			fmt.Sscanf(rg, "bytes=%d-%d", &a, &b)
			a, b = min(a, int64(len(data))), min(b+1, int64(len(data)))
			part := data[a:b]
			start, total := a, int64(len(data))
			switch op {
			case 1: // cut after arg*64 bytes
				w = &dropWriter{ResponseWriter: w, limit: min(int64(arg)*64, int64(len(part)))}
			case 2:
				start += int64(arg%5) - 2
			case 3:
				total += int64(arg%3) - 1
			case 4:
				w.Header().Set("ETag", fmt.Sprintf(`"g%d"`, arg))
			case 5:
				w.Header().Set("Content-Length", fmt.Sprint(len(data)))
				w.WriteHeader(http.StatusOK)
				w.Write(data)
				return
			case 6:
				http.Error(w, "busy", 500+int(arg%4))
				return
			case 7:
				http.Error(w, "gone", 404)
				return
			case 8:
				part = append(bytes.Clone(part), arg)
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+int64(len(part))-1, total))
			w.Header().Set("Content-Length", fmt.Sprint(len(part)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(part)
		}))
		defer srv.Close()
		opt := Options{Src: srv.URL + "/img", HTTPConns: 3, httpChunk: 4 << 10, Retries: 2,
			RetryDelay: time.Millisecond, IdleTimeout: time.Second, ConnectTimeout: 2 * time.Second}
		opt.defaults()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, _, err := openHTTPSource(ctx, &opt)
		if err != nil {
			if !errors.Is(err, ErrHTTP) {
				t.Fatalf("open: not an ErrHTTP: %v", err)
			}
			return
		}
		got, err := io.ReadAll(r)
		r.Close()
		if ctx.Err() != nil {
			t.Fatalf("hung: %v", err)
		}
		if err != nil {
			if !errors.Is(err, ErrHTTP) {
				t.Fatalf("not an ErrHTTP: %v", err)
			}
			if !bytes.Equal(got, data[:len(got)]) {
				t.Fatalf("wrong bytes before the error %v", err)
			}
			return
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("got %d bytes that differ from the image", len(got))
		}
	})
}
