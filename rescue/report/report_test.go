package report

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPost(t *testing.T) {
	var got []byte
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		got, _ = io.ReadAll(r.Body)
	}))
	defer srv.Close()
	r := New("test")
	r.Found["disks"] = []string{"/dev/sda"}
	r.Steps = append(r.Steps, Step{Name: "fix", Status: "ok", Duration: time.Second, Seconds: 1})
	r.Finish(nil)
	if err := r.Post(context.Background(), nil, srv.URL, 3); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("server got %q: %v", got, err)
	}
	if back["result"] != "ok" || calls.Load() != 2 {
		t.Errorf("server got %v after %d calls", back, calls.Load())
	}
}

func TestPostFails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusForbidden)
	}))
	defer srv.Close()
	r := New("test")
	r.Finish(errors.New("fix: boom"))
	err := r.Post(context.Background(), nil, srv.URL, 3)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Post = %v, want a 403 error", err)
	}
	if !strings.Contains(string(r.JSON()), `"reason": "fix: boom"`) {
		t.Errorf("JSON lacks the reason: %s", r.JSON())
	}
}
