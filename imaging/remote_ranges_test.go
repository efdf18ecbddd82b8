package imaging

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
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

// smbReads is a loopback proxy to an SMB server that counts the READ
// requests in flight on all its connections (from the SMB2 headers: the
// test share signs but does not encrypt). Until two are seen in flight at
// once, it holds back the answer to a lone READ (up to 20 s) so that a
// client that does send several has the time to: the count does not
// depend on how fast the machine is.
type smbReads struct {
	port int
	mu   sync.Mutex
	n    int // READs in flight
	max  int
	// conns counts the connections.
	conns atomic.Int32
}

func newSMBReads(t *testing.T, target string) *smbReads {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &smbReads{port: l.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.conns.Add(1)
			t.Cleanup(func() { in.Close(); out.Close() })
			go p.pipe(in, out)
		}
	}()
	return p
}

func (p *smbReads) Max() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max
}

// pipe forwards one connection, frame by frame (NetBIOS length + SMB2).
func (p *smbReads) pipe(in, out net.Conn) {
	frames := func(from, to net.Conn, request bool) {
		defer from.Close()
		defer to.Close()
		for {
			var h [4]byte
			if _, err := io.ReadFull(from, h[:]); err != nil {
				return
			}
			msg := make([]byte, int(h[1])<<16|int(h[2])<<8|int(h[3]))
			if _, err := io.ReadFull(from, msg); err != nil {
				return
			}
			if len(msg) >= 64 && string(msg[:4]) == "\xfeSMB" && binary.LittleEndian.Uint16(msg[12:]) == 8 { // READ
				status := binary.LittleEndian.Uint32(msg[8:])
				p.mu.Lock()
				switch {
				case request:
					p.n++
					p.max = max(p.max, p.n)
				case status != 0x103: // not STATUS_PENDING: the answer
					deadline := time.Now().Add(20 * time.Second)
					for p.max < 2 && p.n == 1 && time.Now().Before(deadline) {
						p.mu.Unlock()
						time.Sleep(time.Millisecond)
						p.mu.Lock()
					}
					p.n--
				}
				p.mu.Unlock()
			}
			if _, err := to.Write(append(h[:], msg...)); err != nil {
				return
			}
		}
	}
	go frames(in, out, true)
	frames(out, in, false)
}

// TestSMBRangesInFlight reads a file from Samba in ranges over
// HTTPConns sessions: several READ requests are in flight at once, the
// bytes come in order, at most HTTPConns+1 chunks are held, the soft
// memory limit is lowered while reading and put back by Close.
func TestSMBRangesInFlight(t *testing.T) {
	s := remotetest.StartSMBShare(t)
	data := pattern(6<<20+4321, 4)
	if err := os.WriteFile(s.Local("obj"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	proxy := newSMBReads(t, fmt.Sprintf("127.0.0.1:%d", s.Port))
	opt := Options{Src: s.URL("obj", proxy.port), Cred: s.Cred, HTTPConns: 4, httpChunk: 512 << 10,
		Retries: 2, RetryDelay: 10 * time.Millisecond, ConnectTimeout: 5 * time.Second,
		Log: func(f string, a ...any) { t.Logf(f, a...) }}
	prev := debug.SetMemoryLimit(-1)
	src := rangeSource(t, &opt)
	got, err := io.ReadAll(src.r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the reassembled file differs")
	}
	if l := debug.SetMemoryLimit(-1); prev > smbMemoryLimit && l != smbMemoryLimit {
		t.Errorf("memory limit %d while reading, want %d", l, smbMemoryLimit)
	}
	defer func() {
		src.Close()
		if l := debug.SetMemoryLimit(-1); l != prev {
			t.Errorf("memory limit %d after Close, want the previous %d", l, prev)
		}
	}()
	if m := proxy.Max(); m < 2 {
		t.Errorf("at most %d READ in flight, want several", m)
	}
	if c := proxy.conns.Load(); c != int32(opt.HTTPConns) {
		t.Errorf("%d connections, want %d (one session each)", c, opt.HTTPConns)
	}
	rr := src.r.(*rangeReader)
	rr.mu.Lock()
	allocs := rr.allocs
	rr.mu.Unlock()
	if allocs > opt.HTTPConns+1 {
		t.Errorf("%d chunk buffers allocated, want at most %d", allocs, opt.HTTPConns+1)
	}
}

// smbPut uploads data as name with smbclient.
func smbPut(t *testing.T, s *remotetest.Share, name string, data []byte) {
	t.Helper()
	dir := t.TempDir()
	f, auth := filepath.Join(dir, "put"), filepath.Join(dir, "auth")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(auth, []byte(fmt.Sprintf("username=%s\npassword=%s\ndomain=%s\n", s.Cred.User, s.Cred.Password, s.Cred.Domain)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(remotetest.Need(t, "smbclient", "smbclient"), "-q", "-p", fmt.Sprint(s.Port), "-A", auth,
		"//127.0.0.1/images", "-c", "put "+f+" "+name).CombinedOutput()
	if err != nil {
		t.Fatalf("smbclient put: %v: %s", err, out)
	}
}

// TestSMBRangesChanged: a file rewritten on the server (same size) while
// it is read in ranges fails the read with ErrChanged; the bytes handed
// out before are the old file's.
func TestSMBRangesChanged(t *testing.T) {
	s := remotetest.StartSMBShare(t)
	old := pattern(8<<20, 5)
	if err := os.WriteFile(s.Local("obj"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	remotetest.Chown(t, s.Local("obj"), "nobody")
	opt := Options{Src: s.URL("obj", 0), Cred: s.Cred, HTTPConns: 2, httpChunk: 256 << 10,
		Retries: 2, RetryDelay: 10 * time.Millisecond, ConnectTimeout: 5 * time.Second,
		Log: func(f string, a ...any) { t.Logf(f, a...) }}
	src := rangeSource(t, &opt)
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(src.r, head); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, old[:len(head)]) {
		t.Fatal("the first MiB differs from the file")
	}
	// Replaced through SMB by a stock client (smbclient put, the same
	// size): Samba keeps the times of a file it has open and sees only
	// the writes made through it.
	smbPut(t, s, "obj", pattern(len(old), 6))
	rest, err := io.ReadAll(src.r)
	if !errors.Is(err, remote.ErrChanged) {
		t.Fatalf("reading on after the file changed: %v (%d bytes), want ErrChanged", err, len(rest))
	}
	t.Logf("the error: %v", err)
	if !bytes.Equal(rest, old[len(head):len(head)+len(rest)]) {
		t.Error("bytes handed out before the error are not the old file's")
	}
	s.NoSecrets(t, err.Error())
}
