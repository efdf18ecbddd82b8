package job

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/davtest"
)

func TestExpand(t *testing.T) {
	v := Vars{MAC: MACVar("52:54:00:AB:cd:01"), Serial: "CZ 12/3"}
	for _, c := range []struct{ in, want, err string }{
		{"http://h/jobs/${mac}", "http://h/jobs/52-54-00-ab-cd-01", ""},
		{"http://h/${serial}/${mac}.job", "http://h/CZ%2012%2F3/52-54-00-ab-cd-01.job", ""},
		{"http://h/fixed", "http://h/fixed", ""},
	} {
		got, err := Expand(c.in, v)
		if err != nil || got != c.want {
			t.Errorf("Expand(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := Expand("http://h/${serial}", Vars{MAC: "x"}); err == nil || !strings.Contains(err.Error(), "${serial} is unknown") {
		t.Errorf("Expand without a serial = %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct{ body, err string }{
		{"# job for rack 4\nrescue.action=fix,verify rescue.target=auto\nrescue.done=reboot\n", ""},
		{"rescue.job=http://other/x", "sets rescue.job= itself"},
		{"init=/bin/sh", "not a rescue setting"},
		{"rescue.action=fix\x00", "not text"},
		{strings.Repeat("#", MaxBytes+1), "larger than"},
	} {
		_, err := Parse([]byte(c.body), "http://h/j")
		if (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("Parse(%.30q) = %v, want %q", c.body, err, c.err)
		}
	}
}

func fast() *Client { return &Client{Tries: 3, RetryDelay: time.Millisecond} }

func TestFetchAndDone(t *testing.T) {
	var gets, deletes atomic.Int32
	job := "rescue.action=fix rescue.target=auto"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/flaky" && gets.Add(1) == 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case r.URL.Path == "/forbidden":
			http.Error(w, "no", http.StatusForbidden)
		case r.Method == http.MethodDelete:
			deletes.Add(1)
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/missing":
			http.NotFound(w, r)
		default:
			w.Write([]byte(job))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	args, found, err := fast().Fetch(ctx, srv.URL+"/flaky")
	if err != nil || !found || len(args) != 2 || args[0].Key != "rescue.action" || args[0].Source != srv.URL+"/flaky" {
		t.Errorf("Fetch after a 503 = %v %v %v", args, found, err)
	}
	if _, found, err := fast().Fetch(ctx, srv.URL+"/missing"); err != nil || found {
		t.Errorf("Fetch of a missing job = %v %v, want not found and no error", found, err)
	}
	if _, _, err := fast().Fetch(ctx, srv.URL+"/forbidden?sig=SECRET"); err == nil || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("Fetch of a forbidden job = %v (want 403, no secret)", err)
	}
	if err := fast().Done(ctx, srv.URL+"/x"); err != nil || deletes.Load() != 1 {
		t.Errorf("Done = %v after %d DELETEs", err, deletes.Load())
	}
	if err := fast().Done(ctx, "http://127.0.0.1:1/x?sig=SECRET"); err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("Done to a closed port = %v (want an error without the secret)", err)
	}
}

// TestWebDAV runs a job against a real WebDAV server (nginx's dav module):
// fetched, marked done with DELETE, gone from the server's directory, and
// a second fetch finds no job.
func TestWebDAV(t *testing.T) {
	root := t.TempDir()
	srv := davtest.Start(t, root)
	// The operator puts the job with a stock client's method: HTTP PUT.
	u := srv.URL + "/jobs/" + MACVar("52:54:00:12:34:56")
	req, _ := http.NewRequest(http.MethodPut, u, strings.NewReader("rescue.action=fix,verify rescue.target=auto rescue.done=reboot\n"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("PUT of the job: %v %v", resp, err)
	}
	resp.Body.Close()
	ctx := context.Background()
	tmpl := srv.URL + "/jobs/${mac}"
	url, err := Expand(tmpl, Vars{MAC: MACVar("52:54:00:12:34:56")})
	if err != nil {
		t.Fatal(err)
	}
	args, found, err := fast().Fetch(ctx, url)
	if err != nil || !found || len(args) != 3 {
		t.Fatalf("Fetch = %v %v %v", args, found, err)
	}
	if err := fast().Done(ctx, url); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "jobs/52-54-00-12-34-56")); !os.IsNotExist(err) {
		t.Errorf("the job file is still on the server: %v", err)
	}
	if _, found, err := fast().Fetch(ctx, url); err != nil || found {
		t.Errorf("second Fetch = %v %v, want no job", found, err)
	}
	for _, want := range []string{"PUT /jobs/52-54-00-12-34-56 201", "GET /jobs/52-54-00-12-34-56 200",
		"DELETE /jobs/52-54-00-12-34-56 204", "GET /jobs/52-54-00-12-34-56 404"} {
		if !srv.HasRequest(want) {
			t.Errorf("nginx's access log lacks %q: %q", want, srv.Requests())
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("# c\nrescue.action=fix rescue.target=auto\n"))
	f.Add([]byte(`rescue.image="/a b" ip=dhcp`))
	f.Fuzz(func(t *testing.T, body []byte) {
		args, err := Parse(body, "fuzz")
		if err != nil {
			return
		}
		for _, a := range args {
			if a.Key == "rescue.job" || !(strings.HasPrefix(a.Key, "rescue.") || a.Key == "ip" || a.Key == "BOOTIF" || a.Key == "modules_load") {
				t.Fatalf("accepted %q", a.Key)
			}
		}
	})
}
