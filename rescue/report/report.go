// Package report is the JSON account of a rescue run — what was found,
// what was done, verification results and timings, the undo files of
// every GPT write whole, and the console log — printed on the console,
// saved on the rescue stick and, when rescue.report= names a URL, POSTed
// there. Its JSON Schema is docs/schema/report-1.schema.json (the
// "schema" field names the version); ExtractUndo takes an undo file back
// out of a saved report for gptfix -undo.
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

// Schema names this report format and its version; a change that drops
// or retypes a field gets a new number (docs/schema/report-N.schema.json).
const Schema = "esxi-rescue-report/1"

// Host identifies the machine.
type Host struct {
	ID     string   `json:"id"`               // the stick's directory name part (keep.HostID)
	Serial string   `json:"serial,omitempty"` // DMI system serial number
	MACs   []string `json:"macs,omitempty"`   // of the NICs
}

// Undo is one undo file of the run, whole.
type Undo struct {
	Step     string          `json:"step"`           // "fix" or "restore" (the GPT fix-up after a restore)
	Device   string          `json:"device"`         // the disk it belongs to
	File     string          `json:"file,omitempty"` // where it was saved ("/dev/sdb1:/rescue-logs/..." on the stick, or a tmpfs path)
	Document json.RawMessage `json:"document"`       // the undo file itself (format gptfix-undo/1)
}

// Posts counts the live-status and report POSTs (rescue.report=).
type Posts struct {
	ProgressSent   int    `json:"progress_sent"`
	ProgressFailed int    `json:"progress_failed"`
	ReportTries    int    `json:"report_tries"` // of the final report, before this copy was made
	LastError      string `json:"last_error,omitempty"`
}

// Report is the whole run.
type Report struct {
	Schema   string         `json:"schema"` // Schema
	Run      string         `json:"run"`    // <host-id>-<UTC start>, as the stick's directory
	Host     Host           `json:"host"`
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
	Undo     []Undo         `json:"undo,omitempty"`   // every undo file of the run, whole
	Kept     []string       `json:"kept,omitempty"`   // files saved on the rescue stick
	Posts    *Posts         `json:"posts,omitempty"`  // with rescue.report=
	Job      any            `json:"job,omitempty"`    // with rescue.job=: the job and whether it was marked done
	Syslog   any            `json:"syslog,omitempty"` // with rescue.syslog=: what was sent
	Log      string         `json:"log,omitempty"`    // the console log (left out of the console copy)
}

// New starts a report.
func New(version string) *Report {
	return &Report{Schema: Schema, Version: version, Found: map[string]any{}, Steps: []Step{}, Start: time.Now()}
}

// AddUndo adds an undo file (its bytes must be the undo JSON).
func (r *Report) AddUndo(step, device, file string, doc []byte) error {
	if !json.Valid(doc) {
		return fmt.Errorf("the undo file %s is not JSON", file)
	}
	r.Undo = append(r.Undo, Undo{Step: step, Device: device, File: file, Document: json.RawMessage(doc)})
	return nil
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

// ConsoleJSON is the report without the console log (which the console
// already shows).
func (r *Report) ConsoleJSON() []byte {
	c := *r
	c.Log = ""
	return c.JSON()
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
