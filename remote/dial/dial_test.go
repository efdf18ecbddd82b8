package dial_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/remotetest"
	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/remote/dial"
)

type server = remotetest.Share

var starters = remotetest.Shares

// logBuf collects log lines (checked for secrets).
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) logf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, f+"\n", a...)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func opts(s *server, log *logBuf) *remote.Options {
	return &remote.Options{Cred: s.Cred, ConnectTimeout: 3 * time.Second, Retries: 2, RetryDelay: 100 * time.Millisecond, Log: log.logf}
}

func noSecrets(t *testing.T, s *server, texts ...string) {
	t.Helper()
	s.NoSecrets(t, texts...)
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func upload(t *testing.T, ctx context.Context, url string, data []byte, overwrite bool, o *remote.Options) error {
	w, err := dial.Create(ctx, url, overwrite, o)
	if err != nil {
		return err
	}
	for p := data; len(p) > 0; {
		k := min(len(p), 1<<20)
		if _, err := w.Write(p[:k]); err != nil {
			w.Abort()
			return err
		}
		p = p[k:]
	}
	return w.Commit()
}

// TestRoundTrip writes an object through each protocol (checked on the
// server's disk), reads it back, resumes a read cut once by a proxy, and
// aborts an upload leaving nothing behind.
func TestRoundTrip(t *testing.T) {
	for _, st := range starters {
		t.Run(st.Name, func(t *testing.T) {
			s := st.Start(t)
			log := &logBuf{}
			o := opts(s, log)
			ctx := context.Background()
			data := randBytes(t, 20<<20+12345)

			if err := upload(t, ctx, s.URL("disk.img", 0), data, false, o); err != nil {
				t.Fatalf("upload: %v", err)
			}
			got, err := os.ReadFile(s.Local("disk.img"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("the server's file differs from what was uploaded (err %v, %d bytes)", err, len(got))
			}
			if _, err := os.Stat(s.Local(remote.TempName("disk.img"))); err == nil {
				t.Errorf("temporary file left behind")
			}
			// An existing object is refused without overwrite.
			err = upload(t, ctx, s.URL("disk.img", 0), data[:10], false, o)
			if !errors.Is(err, remote.ErrExists) {
				t.Errorf("second upload without overwrite: %v, want ErrExists", err)
			}

			r, err := dial.Open(ctx, s.URL("disk.img", 0), o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Size() != int64(len(data)) {
				t.Errorf("size %d, want %d", r.Size(), len(data))
			}
			back, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("read back: %v (%d bytes, equal %v)", err, len(back), bytes.Equal(back, data))
			}

			// Resume: the first connection is dropped after 5 MiB.
			cut := remotetest.NewCut(t, fmt.Sprintf("127.0.0.1:%d", s.Port), 5<<20)
			r, err = dial.Open(ctx, s.URL("disk.img", cut.Port), o)
			if err != nil {
				t.Fatal(err)
			}
			back, err = io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("read through the cutting proxy: %v (%d bytes)", err, len(back))
			}
			if cut.Cuts.Load() != 1 || r.Resumes != 1 {
				t.Errorf("cuts %d, resumes %d; want 1 and 1", cut.Cuts.Load(), r.Resumes)
			}
			if !strings.Contains(log.String(), "resumed at byte") {
				t.Errorf("no resume logged:\n%s", log)
			}

			// Abort: nothing under the name, no temporary file.
			w, err := dial.Create(ctx, s.URL("aborted.img", 0), false, o)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data[:6<<20])
			if _, err := os.Stat(s.Local("aborted.img")); err == nil {
				t.Errorf("the object is visible before Commit")
			}
			if err := w.Abort(); err != nil {
				t.Errorf("abort: %v", err)
			}
			if _, err := dial.Stat(ctx, s.URL("aborted.img", 0), o); !errors.Is(err, remote.ErrNotFound) {
				t.Errorf("after Abort: %v, want ErrNotFound", err)
			}
			ents, _ := os.ReadDir(filepath.Dir(s.Local("x")))
			for _, e := range ents {
				if strings.Contains(e.Name(), "aborted") {
					t.Errorf("left behind after Abort: %s", e.Name())
				}
			}
			noSecrets(t, s, log.String())
		})
	}
}

// TestErrors: each error of the issue, a clear message, no hang, no secret.
func TestErrors(t *testing.T) {
	for _, st := range starters {
		t.Run(st.Name, func(t *testing.T) {
			s := st.Start(t)
			log := &logBuf{}
			ctx := context.Background()
			o := opts(s, log)
			if err := upload(t, ctx, s.URL("present.img", 0), randBytes(t, 1000), false, o); err != nil {
				t.Fatal(err)
			}
			wrong := *s.Cred
			wrong.Password = "definitely-wrong-pw"
			wrong.S3SecretKey = "definitely-wrong-pw"
			wrong.SSHKey = ""
			cred.AddSecret("definitely-wrong-pw")
			dead := remotetest.FreePort(t)
			cases := []struct {
				name string
				url  string
				o    *remote.Options
				want error
				text string
			}{
				{"missing object", s.URL("absent.img", 0), o, remote.ErrNotFound, "absent.img"},
				{"wrong password", s.URL("present.img", 0), &remote.Options{Cred: &wrong, Retries: 1, ConnectTimeout: 3 * time.Second, Log: log.logf}, remote.ErrAuth, ""},
				{"unreachable", s.URL("present.img", dead), &remote.Options{Cred: s.Cred, Retries: 1, RetryDelay: 10 * time.Millisecond, ConnectTimeout: time.Second, Log: log.logf}, nil, "giving up"},
			}
			switch s.Name {
			case "smb":
				cases = append(cases, struct {
					name string
					url  string
					o    *remote.Options
					want error
					text string
				}{"missing share", strings.Replace(s.URL("present.img", 0), "/images/", "/noshare/", 1), o, remote.ErrNotFound, `no share "noshare"`})
			case "s3":
				cases = append(cases, struct {
					name string
					url  string
					o    *remote.Options
					want error
					text string
				}{"missing bucket", strings.Replace(s.URL("present.img", 0), "s3://images/", "s3://nobucket/", 1), o, remote.ErrNotFound, `bucket "nobucket" does not exist`})
			}
			for _, c := range cases {
				start := time.Now()
				_, err := dial.Open(ctx, c.url, c.o)
				took := time.Since(start)
				if err == nil {
					t.Errorf("%s: no error", c.name)
					continue
				}
				msg := err.Error()
				t.Logf("%s: %v (%v)", c.name, msg, took.Round(time.Millisecond))
				if c.want != nil && !errors.Is(err, c.want) {
					t.Errorf("%s: %v, want %v", c.name, err, c.want)
				}
				if !strings.Contains(msg, c.text) {
					t.Errorf("%s: message %q lacks %q", c.name, msg, c.text)
				}
				if strings.Contains(msg, "\n") {
					t.Errorf("%s: message is not one line: %q", c.name, msg)
				}
				if took > 15*time.Second {
					t.Errorf("%s: took %v", c.name, took)
				}
				noSecrets(t, s, msg)
				if strings.Contains(msg, "definitely-wrong-pw") {
					t.Errorf("%s: the password is in the message", c.name)
				}
			}
			noSecrets(t, s, log.String())
		})
	}
}
