// Package report is the JSON account of a rescue run — what was found,
// what was done, verification results and timings — printed on the
// console and, when rescue.report= names a URL, POSTed there.
package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Step is the record of one step of the flow.
type Step struct {
	Name     string        `json:"name"`
	Status   string        `json:"status"` // "ok", "failed", "skipped"
	Error    string        `json:"error,omitempty"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	Seconds  float64       `json:"seconds"`
	Details  any           `json:"details,omitempty"`
}

// Report is the whole run.
type Report struct {
	Version  string         `json:"version"`  // the rescue program's version
	Kernel   string         `json:"kernel"`   // uname -r
	Cmdline  string         `json:"cmdline"`  // /proc/cmdline
	Settings any            `json:"settings"` // the parsed rescue.* settings
	Found    map[string]any `json:"found"`    // drivers, disks, NICs, network, target
	Steps    []Step         `json:"steps"`
	Result   string         `json:"result"` // "ok" or "failed"
	Reason   string         `json:"reason,omitempty"`
	Start    time.Time      `json:"start"`
	Seconds  float64        `json:"seconds"`
}

// New starts a report.
func New(version string) *Report {
	return &Report{Version: version, Found: map[string]any{}, Start: time.Now()}
}

// Finish records the outcome and the total time.
func (r *Report) Finish(err error) {
	r.Seconds = time.Since(r.Start).Seconds()
	if err != nil {
		r.Result, r.Reason = "failed", err.Error()
	} else {
		r.Result, r.Reason = "ok", ""
	}
}

// JSON returns the report, indented.
func (r *Report) JSON() []byte {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		// Details hold only plain data; this is a programming error, but
		// the report must still come out.
		b, _ = json.Marshal(map[string]string{"result": r.Result, "reason": r.Reason, "marshal_error": err.Error()})
	}
	return append(b, '\n')
}

// Post sends the report as application/json to url and expects a 2xx
// answer, retrying a few times (the network may just have come up).
func (r *Report) Post(ctx context.Context, client *http.Client, url string, tries int) error {
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	if tries < 1 {
		tries = 1
	}
	body := r.JSON()
	var last error
	for i := 0; i < tries; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("posting the report to %s: %w (last error: %v)", url, ctx.Err(), last)
			case <-time.After(time.Duration(i) * time.Second):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("posting the report to %s: %w", url, err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			last = err
			continue
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil
		}
		last = fmt.Errorf("server answered %s", resp.Status)
		if resp.StatusCode/100 == 4 {
			break // the server will not change its mind
		}
	}
	return fmt.Errorf("posting the report to %s: %w", url, last)
}
