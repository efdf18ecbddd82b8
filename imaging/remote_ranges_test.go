package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/remotetest"
	"github.com/esxi-rescue/rescue/remote"
)

// pattern is n bytes that differ with seed and with the offset.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>13) ^ seed
	}
	return b
}

// s3Put uploads data as name with curl (a stock client: versitygw gives
// the object an ETag then, as S3 does).
func s3Put(t *testing.T, s *remotetest.Share, name string, data []byte) {
	t.Helper()
	f := tmp(t, "put")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(remotetest.Need(t, "curl", "curl"), "-sSf", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
		"--aws-sigv4", "aws:amz:us-east-1:s3", "--user", s.Cred.S3AccessKey+":"+s.Cred.S3SecretKey,
		"-T", f, fmt.Sprintf("http://127.0.0.1:%d/images/%s", s.Port, name)).CombinedOutput()
	if err != nil {
		t.Fatalf("curl PUT: %v: %s", err, out)
	}
}

// rangeSource opens opt.Src and requires it to be read in ranges.
func rangeSource(t *testing.T, opt *Options) *source {
	t.Helper()
	opt.defaults()
	src, err := openSource(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if _, ok := src.r.(*rangeReader); !ok {
		t.Fatalf("%s is read by a %T, not in ranges", opt.Src, src.r)
	}
	return src
}

// TestS3RangesChanged: an object replaced (through S3, by curl) while it
// is read in ranges fails the read with ErrChanged once a range of the
// new object is asked for; the bytes handed out before are the old
// object's, in order.
func TestS3RangesChanged(t *testing.T) {
	s := remotetest.StartS3Share(t)
	old := pattern(8<<20, 1)
	s3Put(t, s, "obj", old)
	var mu sync.Mutex
	var logs strings.Builder
	opt := Options{Src: s.URL("obj", 0), Cred: s.Cred, HTTPConns: 2, httpChunk: 256 << 10,
		Retries: 2, RetryDelay: 10 * time.Millisecond, ConnectTimeout: 5 * time.Second,
		Log: func(f string, a ...any) { mu.Lock(); fmt.Fprintf(&logs, f+"\n", a...); mu.Unlock() }}
	src := rangeSource(t, &opt)
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(src.r, head); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, old[:len(head)]) {
		t.Fatal("the first MiB differs from the object")
	}
	// The same size: only the ETag tells the objects apart.
	s3Put(t, s, "obj", pattern(len(old), 2))
	rest, err := io.ReadAll(src.r)
	if !errors.Is(err, remote.ErrChanged) {
		t.Fatalf("reading on after the object changed: %v (%d bytes), want ErrChanged; the log:\n%s", err, len(rest), logs.String())
	}
	if !bytes.Equal(rest, old[len(head):len(head)+len(rest)]) {
		t.Error("bytes handed out before the error are not the old object's")
	}
	if len(head)+len(rest) >= len(old) {
		t.Error("the whole object was read")
	}
	t.Logf("the error: %v", err)
	s.NoSecrets(t, logs.String(), err.Error())
}

// TestS3RangesBoundedMemory: a reader slower than the server holds at
// most HTTPConns+1 chunks, and the bytes come in order; an object PUT by
// S3 (with an ETag) and one whose connection is cut mid-range (resumed)
// both read whole.
func TestS3RangesBoundedMemory(t *testing.T) {
	s := remotetest.StartS3Share(t)
	data := pattern(6<<20+12345, 3)
	s3Put(t, s, "obj", data)
	cut := remotetest.NewCut(t, fmt.Sprintf("127.0.0.1:%d", s.Port), 300<<10)
	var mu sync.Mutex
	var logs strings.Builder
	opt := Options{Src: s.URL("obj", cut.Port), Cred: s.Cred, HTTPConns: 3, httpChunk: 512 << 10,
		Retries: 2, RetryDelay: 10 * time.Millisecond, ConnectTimeout: 5 * time.Second,
		Log: func(f string, a ...any) { mu.Lock(); fmt.Fprintf(&logs, f+"\n", a...); mu.Unlock() }}
	src := rangeSource(t, &opt)
	var got bytes.Buffer
	buf := make([]byte, 32<<10)
	for {
		n, err := src.r.Read(buf)
		got.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%v; the log:\n%s", err, logs.String())
		}
		if got.Len()%(1<<20) < len(buf) {
			time.Sleep(20 * time.Millisecond) // let the workers run ahead
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("the reassembled object differs")
	}
	rr := src.r.(*rangeReader)
	rr.mu.Lock()
	allocs := rr.allocs
	rr.mu.Unlock()
	if allocs > opt.HTTPConns+1 || allocs < 2 {
		t.Errorf("%d chunk buffers allocated, want 2..%d", allocs, opt.HTTPConns+1)
	}
	if cut.Cuts.Load() != 1 || !strings.Contains(logs.String(), "resumed at byte") {
		t.Errorf("%d cuts; want one, resumed; the log:\n%s", cut.Cuts.Load(), logs.String())
	}
	s.NoSecrets(t, logs.String())
}
