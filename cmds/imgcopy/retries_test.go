package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// cutWriter passes the first n bytes of a body, then drops the connection.
type cutWriter struct {
	http.ResponseWriter
	n int
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if len(p) > c.n {
		c.ResponseWriter.Write(p[:c.n])
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the server closes the connection
	}
	c.n -= len(p)
	return c.ResponseWriter.Write(p)
}

// TestRetries: against a server whose first answer drops after 256 KiB,
// -retries 0 fails with one line saying the download was not resumed, and
// -retries 1 (and the default) resumes and restores the image; a negative
// -retries is refused. With one stream and with parallel ranges.
func TestRetries(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	data := writeImage(t, img, 3<<20)
	for _, conns := range []string{"1", "4"} {
		for _, tc := range []struct {
			retries  []string
			code     int
			inStderr string
		}{
			{[]string{"-retries", "0"}, 2, "not resumed (retries 0)"},
			{[]string{"-retries", "1"}, 0, ""},
			{nil, 0, ""},
			{[]string{"-retries", "-1"}, 2, "-retries -1: want 0 (none) or more"},
		} {
			name := "conns " + conns + " " + strings.Join(tc.retries, " ")
			t.Run(name, func(t *testing.T) {
				var requests atomic.Int32
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if requests.Add(1) == 1 {
						w = &cutWriter{ResponseWriter: w, n: 256 << 10}
					}
					http.ServeContent(w, r, "img", time.Unix(1700000000, 0), bytes.NewReader(data))
				}))
				defer srv.Close()
				dst := filepath.Join(t.TempDir(), "out")
				args := append([]string{"-q", "-progress", "none", "-http-conns", conns}, tc.retries...)
				var out, errb bytes.Buffer
				code := run(append(args, srv.URL+"/img", dst), &out, &errb)
				if code != tc.code || !strings.Contains(errb.String(), tc.inStderr) {
					t.Fatalf("exit %d, stderr %q; want %d and %q", code, errb.String(), tc.code, tc.inStderr)
				}
				t.Logf("stderr: %s", errb.String())
				if code != 0 {
					if lines := strings.Count(strings.TrimSpace(errb.String()), "\n") + 1; lines != 1 {
						t.Errorf("stderr has %d lines, want one:\n%s", lines, errb.String())
					}
					return
				}
				if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
					t.Errorf("restored image differs (%v)", err)
				}
				if requests.Load() < 2 {
					t.Errorf("%d requests: the drop was not resumed", requests.Load())
				}
			})
		}
	}
}
