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

// server is one protocol's test fixture.
type server struct {
	name string
	// url returns the URL of name on the server, reached at port (0 = the server's own).
	url func(name string, port int) string
	// local returns the server-side path of name (checked with the file system, not our client).
	local func(name string) string
	port  int
	cred  *cred.Cred
	// secrets must never appear in any output.
	secrets []string
}

func startSFTP(t *testing.T) *server {
	s := remotetest.StartSSHD(t)
	dir := remotetest.OpenDir(t)
	remotetest.Chown(t, dir, "nobody")
	return &server{
		name: "sftp",
		url: func(name string, port int) string {
			if port == 0 {
				return fmt.Sprintf("sftp://nobody@127.0.0.1:%d%s/%s", s.Port, dir, name)
			}
			return fmt.Sprintf("sftp://nobody@127.0.0.1:%d%s/%s?hostkey=%s", port, dir, name, s.HostKeyFP)
		},
		local: func(name string) string { return filepath.Join(dir, name) },
		port:  s.Port,
		cred:  &cred.Cred{SSHKey: s.KeyFile, KnownHosts: s.KnownHosts},
	}
}

func startSMB(t *testing.T) *server {
	s := remotetest.StartSamba(t, 0)
	c, err := cred.Parse(strings.NewReader("user=nobody\npassword=" + s.Password + "\ndomain=RESCUE\n"))
	if err != nil {
		t.Fatal(err)
	}
	return &server{
		name: "smb",
		url: func(name string, port int) string {
			if port == 0 {
				port = s.Port
			}
			return fmt.Sprintf("smb://127.0.0.1:%d/images/%s", port, name)
		},
		local:   func(name string) string { return filepath.Join(s.Root, name) },
		port:    s.Port,
		cred:    c,
		secrets: []string{s.Password},
	}
}

func startS3(t *testing.T) *server {
	s := remotetest.StartS3(t)
	c, err := cred.Parse(strings.NewReader("s3_access_key=" + s.Access + "\ns3_secret_key=" + s.Secret + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return &server{
		name: "s3",
		url: func(name string, port int) string {
			if port == 0 {
				port = s.Server.Port
			}
			return fmt.Sprintf("s3://images/%s?endpoint=http://127.0.0.1:%d&region=us-east-1", name, port)
		},
		local:   func(name string) string { return filepath.Join(s.Root, "images", name) },
		port:    s.Server.Port,
		cred:    c,
		secrets: []string{s.Secret},
	}
}

var starters = []struct {
	name  string
	start func(*testing.T) *server
}{
	{"sftp", startSFTP},
	{"smb", startSMB},
	{"s3", startS3},
}

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
	return &remote.Options{Cred: s.cred, ConnectTimeout: 3 * time.Second, Retries: 2, RetryDelay: 100 * time.Millisecond, Log: log.logf}
}

func noSecrets(t *testing.T, s *server, texts ...string) {
	t.Helper()
	for _, x := range texts {
		for _, sec := range s.secrets {
			if strings.Contains(x, sec) {
				t.Errorf("the secret appears in output: %q", x)
			}
		}
	}
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
		t.Run(st.name, func(t *testing.T) {
			s := st.start(t)
			log := &logBuf{}
			o := opts(s, log)
			ctx := context.Background()
			data := randBytes(t, 20<<20+12345)

			if err := upload(t, ctx, s.url("disk.img", 0), data, false, o); err != nil {
				t.Fatalf("upload: %v", err)
			}
			got, err := os.ReadFile(s.local("disk.img"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("the server's file differs from what was uploaded (err %v, %d bytes)", err, len(got))
			}
			if _, err := os.Stat(s.local(remote.TempName("disk.img"))); err == nil {
				t.Errorf("temporary file left behind")
			}
			// An existing object is refused without overwrite.
			err = upload(t, ctx, s.url("disk.img", 0), data[:10], false, o)
			if !errors.Is(err, remote.ErrExists) {
				t.Errorf("second upload without overwrite: %v, want ErrExists", err)
			}

			r, err := dial.Open(ctx, s.url("disk.img", 0), o)
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
			cut := remotetest.NewCut(t, fmt.Sprintf("127.0.0.1:%d", s.port), 5<<20)
			r, err = dial.Open(ctx, s.url("disk.img", cut.Port), o)
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
			w, err := dial.Create(ctx, s.url("aborted.img", 0), false, o)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data[:6<<20])
			if _, err := os.Stat(s.local("aborted.img")); err == nil {
				t.Errorf("the object is visible before Commit")
			}
			if err := w.Abort(); err != nil {
				t.Errorf("abort: %v", err)
			}
			if _, err := dial.Stat(ctx, s.url("aborted.img", 0), o); !errors.Is(err, remote.ErrNotFound) {
				t.Errorf("after Abort: %v, want ErrNotFound", err)
			}
			ents, _ := os.ReadDir(filepath.Dir(s.local("x")))
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
		t.Run(st.name, func(t *testing.T) {
			s := st.start(t)
			log := &logBuf{}
			ctx := context.Background()
			o := opts(s, log)
			if err := upload(t, ctx, s.url("present.img", 0), randBytes(t, 1000), false, o); err != nil {
				t.Fatal(err)
			}
			wrong := *s.cred
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
				{"missing object", s.url("absent.img", 0), o, remote.ErrNotFound, "absent.img"},
				{"wrong password", s.url("present.img", 0), &remote.Options{Cred: &wrong, Retries: 1, ConnectTimeout: 3 * time.Second, Log: log.logf}, remote.ErrAuth, ""},
				{"unreachable", s.url("present.img", dead), &remote.Options{Cred: s.cred, Retries: 1, RetryDelay: 10 * time.Millisecond, ConnectTimeout: time.Second, Log: log.logf}, nil, "giving up"},
			}
			switch s.name {
			case "smb":
				cases = append(cases, struct {
					name string
					url  string
					o    *remote.Options
					want error
					text string
				}{"missing share", strings.Replace(s.url("present.img", 0), "/images/", "/noshare/", 1), o, remote.ErrNotFound, `no share "noshare"`})
			case "s3":
				cases = append(cases, struct {
					name string
					url  string
					o    *remote.Options
					want error
					text string
				}{"missing bucket", strings.Replace(s.url("present.img", 0), "s3://images/", "s3://nobucket/", 1), o, remote.ErrNotFound, `bucket "nobucket" does not exist`})
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
