// Package davtest runs a real WebDAV server for tests: Debian's nginx with
// its dav module (PUT, DELETE, MKCOL), with a configuration of its own, on
// a loopback port, serving a directory the test owns. It stands for the
// job share a site would run (initramfs/boot/pxe-README.md).
package davtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Server is a running nginx.
type Server struct {
	URL       string // http://127.0.0.1:PORT (no trailing slash)
	Addr      string // 127.0.0.1:PORT
	Root      string // the served directory
	AccessLog string // nginx's access log: "METHOD URI STATUS" per line
}

// Start runs nginx serving root (created if missing) until the test ends.
// The test is skipped when nginx is not installed, and fails when it does
// not come up.
func Start(t testing.TB, root string) *Server {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
			if _, err2 := os.Stat(p); err2 == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skip("needs nginx (Debian package nginx-light, with the dav module)")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	s := &Server{URL: "http://" + addr, Addr: addr, Root: root, AccessLog: filepath.Join(dir, "access.log")}
	user := ""
	if os.Getuid() == 0 {
		user = "user root;" // workers must write the test's directory
	}
	conf := fmt.Sprintf(`%s
daemon off;
master_process on;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 64; }
http {
	log_format dav '$request_method $request_uri $status';
	access_log %[3]s dav;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	server {
		listen %[4]s;
		root %[5]s;
		location / {
			dav_methods PUT DELETE MKCOL;
			create_full_put_path on;
			dav_access user:rw group:r all:r;
		}
	}
}
`, user, dir, s.AccessLog, addr, root)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", cf, "-p", dir)
	out, _ := os.Create(filepath.Join(dir, "stderr"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) // SIGINT: fast shutdown
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "stderr"))
			e, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not come up on %s: %v\n%s\n%s", addr, err, b, e)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Requests returns the access log's lines ("DELETE /jobs/x 204").
func (s *Server) Requests() []string {
	b, _ := os.ReadFile(s.AccessLog)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// HasRequest waits up to 30 s for a line of the access log equal to
// want: nginx logs a request after answering it, so the client may be on
// before the line is there (a second was short with the worker
// descheduled on a loaded machine; the wait ends as soon as it comes).
func (s *Server) HasRequest(want string) bool {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, l := range s.Requests() {
			if l == want {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
