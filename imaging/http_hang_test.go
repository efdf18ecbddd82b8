package imaging

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// misbehave serves data with Range support, but body(i, w, part) decides
// how request i sends part (the bytes asked for).
type misbehave struct {
	data    []byte
	declare int64 // Content-Length announced for the whole (0: len(data))
	body    func(i int, w http.ResponseWriter, r *http.Request, part []byte)
	mu      sync.Mutex
	n       int
}

func (m *misbehave) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	i := m.n
	m.n++
	m.mu.Unlock()
	total := int64(len(m.data))
	if m.declare > 0 {
		total = m.declare
	}
	start := int64(0)
	if rg := r.Header.Get("Range"); rg != "" {
		start, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64)
	}
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("ETag", `"x"`)
	w.Header().Set("Content-Length", fmt.Sprint(total-start))
	if start > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, total-1, total))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	part := m.data[min(start, int64(len(m.data))):]
	m.body(i, w, r, part)
}

// hang blocks until the client goes away.
func hang(r *http.Request) { <-r.Context().Done() }

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// TestHTTPMisbehavingServers: a server that never answers, trickles a
// byte now and then, stalls at 99% (again on every resume), or announces
// more than it sends — each restore ends in bounded time with a clear
// error; a server that stalls once at 99% is resumed and the copy is
// whole. Timeouts are kept short through Options.
func TestHTTPMisbehavingServers(t *testing.T) {
	data := make([]byte, 2<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	nines := len(data) * 99 / 100

	// A TCP server that accepts and never answers.
	silent := serveTCP(t, func(c net.Conn) { bufio.NewReader(c).ReadString(0) })

	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
		want string // in the error; "" = must succeed
	}{
		{"never answers", func(t *testing.T) string { return "http://" + silent + "/img" }, "no answer within"},
		{"trickles", serve(&misbehave{data: data, body: func(i int, w http.ResponseWriter, r *http.Request, part []byte) {
			for k := 0; k < len(part); k++ {
				if _, err := w.Write(part[k : k+1]); err != nil {
					return
				}
				flush(w)
				select {
				case <-time.After(50 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
		}}), "stalled"},
		{"stalls at 99%", serve(&misbehave{data: data, body: func(i int, w http.ResponseWriter, r *http.Request, part []byte) {
			if i == 0 {
				w.Write(part[:nines])
			}
			flush(w) // a resume gets its headers, then nothing
			hang(r)
		}}), "stalled"},
		{"too large Content-Length", serve(&misbehave{data: data, declare: int64(len(data)) + 1<<20, body: func(i int, w http.ResponseWriter, r *http.Request, part []byte) {
			w.Write(part)
			flush(w)
			hang(r)
		}}), "stalled"},
		{"stalls once at 99%, then resumes", serve(&misbehave{data: data, body: func(i int, w http.ResponseWriter, r *http.Request, part []byte) {
			if i == 0 {
				w.Write(part[:nines])
				flush(w)
				hang(r)
				return
			}
			w.Write(part)
		}}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := tmp(t, "out")
			opt := httpOpts(t, tc.url(t), dst)
			opt.Retries, opt.ConnectTimeout, opt.IdleTimeout = 2, 300*time.Millisecond, 300*time.Millisecond
			// A safety net only: without timeouts of its own the copy
			// would hang here until this deadline.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err := Copy(ctx, opt)
			took := time.Since(start)
			t.Logf("after %v: %v", took.Round(time.Millisecond), err)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(dst)
				if !bytes.Equal(got, data) {
					t.Errorf("the resumed copy differs")
				}
				return
			}
			if err == nil || !errors.Is(err, ErrHTTP) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an HTTP error saying %q, got %v", tc.want, err)
			}
			if took > 10*time.Second {
				t.Errorf("took %v to fail", took)
			}
		})
	}
}

// serveTCP listens on a loopback port until the test ends and runs handle
// on each connection it accepts (closed after); it returns its host:port.
func serveTCP(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func serve(h http.Handler) func(t *testing.T) string {
	return func(t *testing.T) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL + "/img"
	}
}

// TestHTTPNoJunkOnStderr: a server that sends bytes past the body it
// announced (binary junk) must not make net/http print them to stderr
// (the standard logger) as an "Unsolicited response ... on idle HTTP
// channel"; the image is copied as announced.
func TestHTTPNoJunkOnStderr(t *testing.T) {
	data := bytes.Repeat([]byte("image data "), 1000)
	addr := serveTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(data))
		c.Write(data)
		c.Write([]byte("\x00\x01\x02\xff\xfe junk \x1b[2J"))
		time.Sleep(time.Second)
	})
	var logged lockedBuffer
	log.SetOutput(&logged)
	defer log.SetOutput(os.Stderr)
	dst := tmp(t, "out")
	mustCopy(t, httpOpts(t, "http://"+addr+"/img", dst))
	time.Sleep(300 * time.Millisecond) // the transport's read loop logs asynchronously
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Errorf("the copy differs")
	}
	if s := logged.String(); s != "" {
		t.Errorf("net/http logged to the standard logger (stderr): %q", s)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
