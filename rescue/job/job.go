// Package job fetches the hands-off arguments of a job that runs once
// (rescue.job=URL) and marks the job done when it succeeded, so that the
// next network boot finds no job and boots the local disk.
//
// A job is a small text file in kernel command line syntax (several lines
// and '#' comments allowed), e.g. on a WebDAV share or an S3 bucket, at a
// URL that names the machine: ${mac} (the boot NIC's MAC, lower-case,
// dash-separated like iPXE's ${mac:hexhyp}) and ${serial} (the DMI system
// serial number) are expanded. A missing job (HTTP 404 or 410) is not an
// error: there is nothing to do. Marking done is an HTTP DELETE of the
// same URL; an answer of 404 counts as done.
package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/rescue/cmdline"
)

// MaxBytes bounds a job file: it holds a command line, not data.
const MaxBytes = 64 << 10

// Vars are the values ${mac} and ${serial} expand to.
type Vars struct {
	MAC    string // e.g. "52-54-00-12-34-56"; "" when unknown
	Serial string // DMI system serial, sanitized; "" when unknown
}

// Expand replaces ${mac} and ${serial} in tmpl (values path-escaped). A
// variable whose value is unknown is an error naming it.
func Expand(tmpl string, v Vars) (string, error) {
	for _, x := range []struct{ name, val string }{{"${mac}", v.MAC}, {"${serial}", v.Serial}} {
		if !strings.Contains(tmpl, x.name) {
			continue
		}
		if x.val == "" {
			return "", fmt.Errorf("rescue.job: %s is unknown on this machine", x.name)
		}
		tmpl = strings.ReplaceAll(tmpl, x.name, url.PathEscape(x.val))
	}
	return tmpl, nil
}

// MACVar formats a MAC address for ${mac}: lower-case, dash-separated.
func MACVar(mac string) string {
	return strings.ToLower(strings.ReplaceAll(mac, ":", "-"))
}

// Client does the job's HTTP requests.
type Client struct {
	HTTP       *http.Client  // nil: a client with a 30 s timeout
	Tries      int           // per request (default 5)
	RetryDelay time.Duration // first back-off (default 1 s, doubled)
}

func (c *Client) defaults() (*http.Client, int, time.Duration) {
	h, n, d := c.HTTP, c.Tries, c.RetryDelay
	if h == nil {
		h = &http.Client{Timeout: 30 * time.Second}
	}
	if n < 1 {
		n = 5
	}
	if d <= 0 {
		d = time.Second
	}
	return h, n, d
}

// errPermanent marks an answer that retrying will not change.
var errPermanent = errors.New("permanent")

// do runs one request with retries on network errors and 5xx answers;
// ok decides which status codes end the request successfully.
func (c *Client) do(ctx context.Context, method, u string, ok func(int) bool) (int, []byte, error) {
	hc, tries, delay := c.defaults()
	var last error
	for i := 0; i < tries; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return 0, nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			case <-time.After(delay):
			}
			delay *= 2
		}
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return 0, nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			last = redactErr(err, u)
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBytes+1))
		resp.Body.Close()
		switch {
		case ok(resp.StatusCode) && err == nil:
			return resp.StatusCode, body, nil
		case ok(resp.StatusCode):
			last = fmt.Errorf("reading the answer: %v", err)
		case resp.StatusCode >= 500:
			last = fmt.Errorf("server answered %s", resp.Status)
		default:
			return resp.StatusCode, nil, fmt.Errorf("server answered %s: %w", resp.Status, errPermanent)
		}
	}
	return 0, nil, last
}

// Fetch gets the job at u. found is false when the server has none (404,
// 410); args are the job's arguments, with Source the redacted URL.
func (c *Client) Fetch(ctx context.Context, u string) (args []cmdline.Arg, found bool, err error) {
	where := cmdline.RedactURL(u)
	code, body, err := c.do(ctx, http.MethodGet, u, func(code int) bool {
		return code == http.StatusOK || code == http.StatusNotFound || code == http.StatusGone
	})
	if err != nil {
		return nil, false, fmt.Errorf("fetching the job %s: %w", where, err)
	}
	if code != http.StatusOK {
		return nil, false, nil
	}
	args, err = Parse(body, where)
	return args, err == nil, err
}

// Parse checks a job file and splits it into arguments: text, at most
// MaxBytes, only rescue.*, ip=, BOOTIF= and modules_load= keys (anything
// else would be a kernel argument the job cannot change), and no
// rescue.job= (a job does not name another).
func Parse(body []byte, source string) ([]cmdline.Arg, error) {
	if len(body) > MaxBytes {
		return nil, fmt.Errorf("the job %s is larger than %d bytes: not a job file", source, MaxBytes)
	}
	for _, b := range body {
		if b == 0 || (b < 0x20 && b != '\n' && b != '\r' && b != '\t') {
			return nil, fmt.Errorf("the job %s is not text", source)
		}
	}
	args := cmdline.Split(string(body), source, true)
	for _, a := range args {
		switch {
		case a.Key == "rescue.job":
			return nil, fmt.Errorf("the job %s sets rescue.job= itself", source)
		case strings.HasPrefix(a.Key, "rescue."), a.Key == "ip", a.Key == "BOOTIF", a.Key == "modules_load":
		default:
			return nil, fmt.Errorf("the job %s: %q is not a rescue setting (rescue.*, ip=, BOOTIF=, modules_load=)", source, a.Key)
		}
	}
	return args, nil
}

// Done marks the job at u done: HTTP DELETE; 2xx, 404 and 410 count.
func (c *Client) Done(ctx context.Context, u string) error {
	_, _, err := c.do(ctx, http.MethodDelete, u, func(code int) bool {
		return code/100 == 2 || code == http.StatusNotFound || code == http.StatusGone
	})
	if err != nil {
		return fmt.Errorf("marking the job %s done (DELETE): %w", cmdline.RedactURL(u), err)
	}
	return nil
}

// redactErr keeps a URL's secrets out of an error message (net/http puts
// the whole URL into its errors).
func redactErr(err error, u string) error {
	return errors.New(strings.ReplaceAll(err.Error(), u, cmdline.RedactURL(u)))
}
