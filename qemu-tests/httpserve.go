package qemutests

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ImageServer serves files over HTTP on a loopback port, for the guest to
// reach through a QEMU guestfwd. It honours Range requests (resume) and can
// cut the connection in the middle of a download.
type ImageServer struct {
	Addr string // 127.0.0.1:PORT

	srv *http.Server
	ln  net.Listener

	// CutAfter, when > 0, makes every response to a request without a
	// Range header stop after CutAfter bytes and drop the connection: a
	// client gets the file only by resuming (Range requests are served in
	// full). Cutting every plain request rather than the first one keeps
	// the test independent of how many short reads (e.g. of the image's
	// first sectors) the client makes before the real download; loopback
	// socket buffers accept far more than such a read needs, so the server
	// cannot tell them apart by what it managed to write.
	CutAfter int64
	cuts     atomic.Int32

	mu  sync.Mutex
	log []string // one line per request: "GET /img.zst range=bytes=..."
}

// ServeFiles starts a server for the files map (URL path -> local file).
func ServeFiles(files map[string]string) (*ImageServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("image server: %w", err)
	}
	s := &ImageServer{Addr: ln.Addr().String(), ln: ln}
	mux := http.NewServeMux()
	for urlPath, file := range files {
		mux.HandleFunc(urlPath, func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			s.log = append(s.log, fmt.Sprintf("%s %s range=%q", r.Method, r.URL.Path, r.Header.Get("Range")))
			s.mu.Unlock()
			f, err := os.Open(file)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			defer f.Close()
			st, _ := f.Stat()
			var rw http.ResponseWriter = w
			if s.CutAfter > 0 && r.Header.Get("Range") == "" {
				rw = &cuttingWriter{ResponseWriter: w, left: s.CutAfter, s: s}
			}
			http.ServeContent(rw, r, "", st.ModTime(), f)
		})
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Requests returns one line per request served so far.
func (s *ImageServer) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// RangeRequests counts requests that asked for a byte range (resumes).
func (s *ImageServer) RangeRequests() int {
	n := 0
	for _, l := range s.Requests() {
		if !strings.HasSuffix(l, `range=""`) {
			n++
		}
	}
	return n
}

// Cuts counts the connections dropped mid-response.
func (s *ImageServer) Cuts() int { return int(s.cuts.Load()) }

// Close stops the server.
func (s *ImageServer) Close() { s.srv.Close() }

// cuttingWriter passes through left bytes, then aborts the response: the
// server closes the connection without finishing the body.
type cuttingWriter struct {
	http.ResponseWriter
	left int64
	s    *ImageServer
}

func (c *cuttingWriter) Write(b []byte) (int, error) {
	if int64(len(b)) <= c.left {
		c.left -= int64(len(b))
		return c.ResponseWriter.Write(b)
	}
	c.ResponseWriter.Write(b[:c.left])
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	c.s.cuts.Add(1)
	panic(http.ErrAbortHandler) // net/http closes the connection mid-body
}
