package udpcast

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/netnstest"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
		start         time.Duration
	}{
		{in: "udpcast://", want: "udpcast://?port=9000", start: 120 * time.Second},
		{in: "udpcast://eth1?port=9002&start-timeout=5", want: "udpcast://eth1?port=9002", start: 5 * time.Second},
		{in: "udpcast://eth0/", want: "udpcast://eth0?port=9000", start: 120 * time.Second},
		{in: "udpcast://eth0?port=9001", err: "even"},
		{in: "udpcast://eth0?port=x", err: "positive number"},
		{in: "udpcast://eth0?ignore-lost-data=1", err: "unknown parameter"},
		{in: "udpcast://eth0:9000", err: "want udpcast://"},
		{in: "udpcast://eth0/img", err: "want udpcast://"},
		{in: "http://x/", err: "not a udpcast"},
		{in: "udpcast://a-very-long-interface-name", err: "not a network interface"},
	} {
		sp, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %v, want error %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || sp.String() != tc.want || sp.StartTimeout != tc.start {
			t.Errorf("Parse(%q) = %v %v", tc.in, sp, err)
		}
		if strings.Contains(strings.Join(sp.Args(), " "), "ignore-lost-data") {
			t.Errorf("args %v", sp.Args())
		}
	}
}

// sender starts the stock udp-sender in ns a for file; it waits for one receiver.
func sender(t *testing.T, a *netnstest.NS, file string, extra ...string) *exec.Cmd {
	t.Helper()
	args := a.Command(append([]string{"udp-sender", "--file", file, "--interface", a.Dev, "--portbase", "9000",
		"--nokbd", "--min-receivers", "1"}, extra...)...)
	cmd := exec.Command(args[0], args[1:]...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Logf("udp-sender: %q", log.String())
	})
	return cmd
}

func live(t *testing.T) (a, b *netnstest.NS) {
	t.Helper()
	for _, p := range []string{"udp-sender", "udp-receiver"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is needed (Debian package udpcast): %v", p, err)
		}
	}
	a, b = netnstest.Pair(t)
	old := Command
	Command = b.Command("udp-receiver")
	t.Cleanup(func() { Command = old })
	return a, b
}

// TestReceive: the stock udp-sender to our receiver on a private veth
// link: the bytes arrive whole; with no sender, or a sender killed
// mid-stream, Read ends in an error, never io.EOF.
func TestReceive(t *testing.T) {
	a, b := live(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	data := make([]byte, 6<<20+123)
	rand.Read(data)
	os.WriteFile(img, data, 0o644)
	sp := &Spec{Interface: b.Dev, Port: 9000, StartTimeout: 20 * time.Second, ReceiveTimeout: 3 * time.Second}

	t.Run("whole", func(t *testing.T) {
		sender(t, a, img)
		r, err := Start(context.Background(), sp, t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("received %d bytes (want %d): %v", len(got), len(data), err)
		}
	})
	t.Run("no sender", func(t *testing.T) {
		s := *sp
		s.StartTimeout = 2 * time.Second
		r, err := Start(context.Background(), &s, t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err == nil || len(got) != 0 {
			t.Fatalf("no sender: %d bytes, %v", len(got), err)
		}
		t.Logf("as expected: %v", err)
	})
	t.Run("sender killed", func(t *testing.T) {
		cmd := sender(t, a, img, "--max-bitrate", "8m")
		r, err := Start(context.Background(), sp, t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		var n int64
		for n < 1<<20 {
			m, err := r.Read(buf)
			n += int64(m)
			if err != nil {
				t.Fatalf("after %d bytes: %v", n, err)
			}
		}
		cmd.Process.Kill()
		rest, err := io.ReadAll(r)
		r.Close()
		if err == nil || n+int64(len(rest)) >= int64(len(data)) {
			t.Fatalf("sender killed: got %d bytes and %v", n+int64(len(rest)), err)
		}
		if !strings.Contains(err.Error(), "incomplete") {
			t.Errorf("message: %v", err)
		}
		t.Logf("as expected after %d bytes: %v", n+int64(len(rest)), err)
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"udpcast://", "udpcast://eth0?port=9000&start-timeout=5", "udpcast://e/?receive-timeout=1", "udpcast://[::1]:5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := Parse(s)
		if err != nil {
			return
		}
		if sp.Port%2 != 0 || sp.Port <= 0 || sp.StartTimeout <= 0 || sp.ReceiveTimeout <= 0 || strings.ContainsAny(sp.Interface, " /") {
			t.Fatalf("Parse(%q) = %+v", s, sp)
		}
		for _, a := range sp.Args() {
			if a == "--ignore-lost-data" || a == "" {
				t.Fatalf("args %q", sp.Args())
			}
		}
		if _, err := Parse(sp.String()); err != nil {
			t.Fatalf("String() %q does not parse: %v", sp.String(), err)
		}
	})
}
