package status

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/internal/schematest"
	"github.com/esxi-rescue/rescue/rescue/report"
)

// slowImage serves data in 256 KiB pieces, one every 100 ms, so that a
// restore lasts a few seconds.
func slowImage(data []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		for off := 0; off < len(data); off += 256 << 10 {
			w.Write(data[off:min(off+256<<10, len(data))])
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// collector is the report server: it keeps every POSTed document, or
// answers status to all of them.
type collector struct {
	mu     sync.Mutex
	status int
	docs   [][]byte
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.docs = append(c.docs, b)
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "want a JSON POST", http.StatusBadRequest)
		return
	}
	if c.status != 0 {
		http.Error(w, "broken", c.status)
	}
}

// restore runs a real HTTP restore (imaging.Copy) with p's callbacks, as
// the rescue flow wires them, and checks the bytes arrived.
func restore(t *testing.T, p *Poster) {
	t.Helper()
	data := make([]byte, 6<<20)
	rand.Read(data)
	img := httptest.NewServer(slowImage(data))
	defer img.Close()
	dst := filepath.Join(t.TempDir(), "disk.img")
	p.Step("restore", 1, 1)
	res, err := imaging.Copy(context.Background(), imaging.Options{Src: img.URL + "/esxi.img", Dst: dst,
		ProgressInterval: 200 * time.Millisecond, OnProgress: p.Bytes, Retries: 1})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	got, _ := os.ReadFile(dst)
	if res.Bytes != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("restore wrote %d bytes, not the image", res.Bytes)
	}
}

func TestProgressDuringRestore(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	p := &Poster{URL: srv.URL + "/status", Run: "SN1-20261201T093000Z", Host: "SN1", Interval: 300 * time.Millisecond}
	p.Start()
	restore(t, p)
	posts := p.Stop()
	rep := report.New("test")
	rep.Run, rep.Host = p.Run, report.Host{ID: p.Host}
	rep.Finish(nil)
	if err := p.PostReport(context.Background(), 3, func(ps report.Posts) []byte { rep.Posts = &ps; return rep.JSON() }); err != nil {
		t.Fatal(err)
	}
	prog := schematest.Compile(t, "progress-1.schema.json")
	final := schematest.Compile(t, "report-1.schema.json")
	col.mu.Lock()
	defer col.mu.Unlock()
	var during, seq int
	var last Progress
	for i, d := range col.docs[:len(col.docs)-1] {
		if err := schematest.Check(prog, d); err != nil {
			t.Errorf("progress document %d is not valid: %v\n%s", i, err, d)
		}
		var pr Progress
		json.Unmarshal(d, &pr)
		if pr.Seq != seq+1 {
			t.Errorf("document %d has seq %d after %d", i, pr.Seq, seq)
		}
		seq = pr.Seq
		if pr.Step == "restore" && pr.Phase == "restore" && pr.BytesDone > 0 && pr.BytesDone < 6<<20 && pr.BytesTotal == 6<<20 && pr.Rate > 0 && pr.ETA != nil {
			during++
		}
		last = pr
	}
	if during < 3 {
		t.Errorf("%d progress documents with bytes, rate and ETA during the restore, want at least 3", during)
	}
	if last.BytesDone != 6<<20 || last.ETA == nil || *last.ETA != 0 {
		t.Errorf("last progress document %+v: want all bytes done, ETA 0", last)
	}
	if err := schematest.Check(final, col.docs[len(col.docs)-1]); err != nil {
		t.Errorf("final report is not valid: %v", err)
	}
	if posts.ProgressSent != len(col.docs)-1 || posts.ProgressFailed != 0 {
		t.Errorf("posts %+v for %d documents", posts, len(col.docs))
	}
}

// TestServerErrors: a report server that answers 500 to everything does
// not stop or slow the restore; the failures are counted and the final
// report gives up after its tries with an error.
func TestServerErrors(t *testing.T) {
	col := &collector{status: http.StatusInternalServerError}
	srv := httptest.NewServer(col)
	defer srv.Close()
	var logged []string
	var mu sync.Mutex
	p := &Poster{URL: srv.URL, Run: "r", Host: "h", Interval: 200 * time.Millisecond,
		Log: func(f string, a ...any) { mu.Lock(); logged = append(logged, f); mu.Unlock() }}
	p.Start()
	restore(t, p)
	posts := p.Stop()
	if posts.ProgressFailed < 3 || posts.ProgressSent != 0 || posts.LastError == "" {
		t.Errorf("posts %+v, want >= 3 failed", posts)
	}
	start := time.Now()
	err := p.PostReport(context.Background(), 2, func(report.Posts) []byte { return []byte(`{}`) })
	if err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("PostReport to a broken server = %v after %s", err, time.Since(start))
	}
	if p.Posts().ReportTries != 2 {
		t.Errorf("report tries %d, want 2", p.Posts().ReportTries)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 {
		t.Errorf("logged %d lines for the failures, want 1 (first failure only): %q", len(logged), logged)
	}
}

// TestServerHangs: a server that never answers has no effect on the run
// beyond the counts.
func TestServerHangs(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hang.Close()
	defer close(release)
	p := &Poster{URL: hang.URL, Run: "r", Host: "h", Interval: 200 * time.Millisecond,
		Client: &http.Client{Timeout: 300 * time.Millisecond}}
	p.Start()
	restore(t, p)
	start := time.Now()
	posts := p.Stop()
	if time.Since(start) > 2*time.Second || posts.ProgressFailed == 0 {
		t.Errorf("Stop took %s, posts %+v", time.Since(start), posts)
	}
}
