// Package status sends the live status of a hands-off run: with
// rescue.report=URL a progress document (step, bytes done and total,
// rate, ETA) is POSTed to URL every few seconds while the run lasts —
// also while a step moves no bytes, so a machine that hangs shows as
// silent — and the final report at the end. Both documents are JSON with
// a "schema" field naming a versioned JSON Schema in docs/schema/.
//
// A failed POST never stops the run: a progress document that did not
// arrive is replaced by the next one (the retry carries newer numbers), a
// final report is retried with back-off; both are counted for the report.
package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/report"
)

// Schema names the progress document format and its version
// (docs/schema/progress-1.schema.json).
const Schema = "esxi-rescue-progress/1"

// DefaultInterval is the period of progress POSTs.
const DefaultInterval = 3 * time.Second

// Progress is one progress document.
type Progress struct {
	Schema  string    `json:"schema"`
	Run     string    `json:"run"`  // <host-id>-<UTC start>, as the report's
	Host    string    `json:"host"` // host id
	Seq     int       `json:"seq"`  // 1, 2, ... per run
	Time    time.Time `json:"time"`
	Elapsed float64   `json:"elapsed_seconds"` // since the run started
	Step    string    `json:"step"`            // current step ("" before the first)
	Index   int       `json:"step_index"`      // 1-based
	Steps   int       `json:"steps"`           // steps planned so far
	// Byte counts of the step's current phase (restore, verify), when it
	// moves bytes; Total is -1 when unknown, ETA null when unknown.
	Phase      string   `json:"phase,omitempty"`
	BytesDone  int64    `json:"bytes_done"`
	BytesTotal int64    `json:"bytes_total"`
	Rate       float64  `json:"rate_bytes_per_second"`
	ETA        *float64 `json:"eta_seconds"`
	// Failed POSTs so far (progress and report), for the server to see
	// how much it missed.
	PostsFailed int `json:"posts_failed"`
}

// Poster POSTs progress documents and the final report to one URL.
type Poster struct {
	URL      string
	Run      string
	Host     string
	Interval time.Duration // default DefaultInterval
	Client   *http.Client  // default: 10 s timeout
	// Log reports the first failure and the recovery after failures (not
	// every failure: the console must stay readable).
	Log func(format string, args ...any)

	once    sync.Once
	mu      sync.Mutex
	cur     Progress
	start   time.Time
	posts   report.Posts
	failing bool
	stop    chan struct{}
	done    chan struct{}
}

func (p *Poster) init() {
	p.once.Do(p.defaults)
}

func (p *Poster) defaults() {
	if p.Interval <= 0 {
		p.Interval = DefaultInterval
	}
	if p.Client == nil {
		p.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if p.Log == nil {
		p.Log = func(string, ...any) {}
	}
	p.start = time.Now()
	p.cur = Progress{Schema: Schema, Run: p.Run, Host: p.Host, BytesTotal: -1}
}

// Start begins posting every Interval until Stop.
func (p *Poster) Start() {
	p.init()
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.Interval)
		defer t.Stop()
		for {
			p.postProgress()
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Step records that a step started (a flow.Observer).
func (p *Poster) Step(name string, index, total int) {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur.Step, p.cur.Index, p.cur.Steps = name, index, total
	p.cur.Phase, p.cur.BytesDone, p.cur.BytesTotal, p.cur.Rate, p.cur.ETA = "", 0, -1, 0, nil
}

// Bytes records an imaging progress report (imaging.Options.OnProgress).
func (p *Poster) Bytes(pr imaging.Progress) {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur.Phase, p.cur.BytesDone, p.cur.BytesTotal, p.cur.Rate = pr.Phase, pr.Done, pr.Total, pr.Rate
	p.cur.ETA = nil
	if pr.ETA > 0 || (pr.Total > 0 && pr.Done >= pr.Total) {
		eta := pr.ETA.Seconds()
		p.cur.ETA = &eta
	}
}

// snapshot returns the next document to send.
func (p *Poster) snapshot() Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur.Seq++
	p.cur.Time = time.Now().UTC()
	p.cur.Elapsed = time.Since(p.start).Seconds()
	p.cur.PostsFailed = p.posts.ProgressFailed
	return p.cur
}

func (p *Poster) postProgress() {
	doc := p.snapshot()
	body, _ := json.Marshal(doc)
	ctx, cancel := context.WithTimeout(context.Background(), p.Interval+5*time.Second)
	err := p.post(ctx, body)
	cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.posts.ProgressFailed++
		p.posts.LastError = err.Error()
		if !p.failing {
			p.Log("status: progress POST to %s failed (the run goes on; retried every %s): %v", cmdline.RedactURL(p.URL), p.Interval, err)
		}
		p.failing = true
		return
	}
	p.posts.ProgressSent++
	if p.failing {
		p.Log("status: progress POSTs to %s work again (%d failed so far)", cmdline.RedactURL(p.URL), p.posts.ProgressFailed)
	}
	p.failing = false
}

// post sends one document; a non-2xx answer is an error.
func (p *Poster) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%s", bytes.ReplaceAll([]byte(err.Error()), []byte(p.URL), []byte(cmdline.RedactURL(p.URL))))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("server answered %s", resp.Status)
	}
	return nil
}

// Stop ends the progress POSTs (after one last document) and returns the
// counts so far.
func (p *Poster) Stop() report.Posts {
	if p.stop != nil {
		close(p.stop)
		<-p.done
		p.stop = nil
		p.postProgress() // the last state, e.g. the final step's end
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.posts
}

// Posts returns the counts so far.
func (p *Poster) Posts() report.Posts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.posts
}

// PostReport sends the final report, trying up to tries times with
// back-off (1 s, 2 s, 4 s ...) on network errors and 5xx answers; body
// builds the document for each try, so that it can carry the count of
// tries so far.
func (p *Poster) PostReport(ctx context.Context, tries int, body func(posts report.Posts) []byte) error {
	p.init()
	if tries < 1 {
		tries = 1
	}
	delay := time.Second
	var last error
	for i := 0; i < tries; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("posting the report: %w (last error: %v)", ctx.Err(), last)
			case <-time.After(delay):
			}
			delay *= 2
		}
		p.mu.Lock()
		posts := p.posts
		p.mu.Unlock()
		err := p.post(ctx, body(posts))
		p.mu.Lock()
		p.posts.ReportTries++
		if err != nil {
			p.posts.LastError = err.Error()
		}
		p.mu.Unlock()
		if err == nil {
			return nil
		}
		last = err
	}
	return fmt.Errorf("posting the report to %s: %w", cmdline.RedactURL(p.URL), last)
}
