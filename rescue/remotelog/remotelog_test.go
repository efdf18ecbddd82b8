package remotelog

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"
)

func TestFormat(t *testing.T) {
	s := &Sender{hostname: "mac-52-54-00-12-34-56", run: "SN1-20261201T093000Z"}
	at := time.Date(2026, 12, 1, 9, 30, 0, 123456000, time.UTC)
	for _, c := range []struct {
		line string
		pri  uint8
		id   string
	}{
		{"[09:30:00 +  1.0s] disk: /dev/vda 8.0 GiB", 14, "console"},
		{"[09:30:01 +  2.0s] RESCUE: STEP fix FAILED (0.1s): boom", 11, "marker"},
		{"[09:30:01 +  2.0s] RESCUE: STEP network WARNING (0.1s): no link", 12, "marker"},
	} {
		msg, err := s.Format(c.line, at)
		if err != nil {
			t.Fatal(err)
		}
		// A stock RFC 5424 parser (strict mode) reads it back.
		m, err := rfc5424.NewParser().Parse([]byte(msg))
		if err != nil {
			t.Fatalf("%q does not parse as RFC 5424: %v", msg, err)
		}
		sm := m.(*rfc5424.SyslogMessage)
		if *sm.Priority != c.pri || *sm.Hostname != s.hostname || *sm.Appname != AppName || *sm.MsgID != c.id ||
			*sm.Message != c.line || !sm.Timestamp.Equal(at) || (*sm.StructuredData)[SDID]["run"] != s.run {
			t.Errorf("%q parsed as %+v", msg, sm)
		}
	}
}

// rsyslog runs Debian's rsyslogd with a config of its own on loopback
// UDP and TCP ports, writing what it receives to a file in a template
// that shows the RFC 5424 fields it parsed.
func rsyslog(t *testing.T) (udp, tcp, out string) {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/rsyslogd"); err2 != nil {
			t.Skip("needs rsyslogd (Debian package rsyslog)")
		}
		bin = "/usr/sbin/rsyslogd"
	}
	dir := t.TempDir()
	free := func(network string) string {
		if network == "udp" {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			return c.LocalAddr().String()
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	udp, tcp, out = free("udp"), free("tcp"), filepath.Join(dir, "received.log")
	port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
	conf := fmt.Sprintf(`global(workDirectory="%[1]s")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="%[2]s")
input(type="imtcp" address="127.0.0.1" port="%[3]s")
template(name="fields" type="string" string="%%protocol-version%%|%%pri%%|%%hostname%%|%%app-name%%|%%msgid%%|%%structured-data%%|%%msg%%\n")
*.* action(type="omfile" file="%[4]s" template="fields")
`, dir, port(udp), port(tcp), out)
	cf := filepath.Join(dir, "rsyslog.conf")
	os.WriteFile(cf, []byte(conf), 0o644)
	cmd := exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, "pid"))
	logf, _ := os.Create(filepath.Join(dir, "stderr"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", tcp); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "stderr"))
			t.Fatalf("rsyslogd did not listen on %s:\n%s", tcp, b)
		}
	}
	return udp, tcp, out
}

// TestRsyslog sends console text through UDP and TCP to a real rsyslogd,
// which must parse every line as RFC 5424 (protocol version 1, our
// hostname, app name, msgid, structured data and the line itself).
func TestRsyslog(t *testing.T) {
	udp, tcp, out := rsyslog(t)
	lines := map[string][]string{}
	for _, c := range []struct{ spec, proto string }{{"udp://" + udp, "udp"}, {"tcp://" + tcp, "tcp"}, {udp, "plain"}} {
		s, err := New(c.spec, "host-"+c.proto, "run-1")
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := 0; i < 20; i++ {
			want = append(want, fmt.Sprintf("[09:30:%02d +%6.1fs] %s line %d with spaces", i, float64(i), c.proto, i))
		}
		text := strings.Join(want, "\n") + "\n\n"
		s.Write([]byte(text[:17])) // a line split across writes
		s.Write([]byte(text[17:]))
		s.Write([]byte("[09:31:00 +  60.0s] RESCUE: DONE ok\n"))
		want = append(want, "[09:31:00 +  60.0s] RESCUE: DONE ok")
		st := s.Close(10 * time.Second)
		if st.Sent != len(want) || st.Dropped != 0 {
			t.Errorf("%s: stats %+v, want %d sent", c.proto, st, len(want))
		}
		lines["host-"+c.proto] = want
	}
	// Wait for rsyslog to write everything (30 s at most: it writes
	// asynchronously, later on a loaded machine).
	var got []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(out)
		got = strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(got) >= 63 || time.Now().After(deadline) {
			break
		}
	}
	seen := map[string]bool{}
	for _, l := range got {
		seen[l] = true
	}
	for host, want := range lines {
		for _, w := range want {
			pri, id := "14", "console"
			if strings.Contains(w, "RESCUE: ") {
				id = "marker"
			}
			rec := strings.Join([]string{"1", pri, host, AppName, id, `[rescue@32473 run="run-1"]`, w}, "|")
			if !seen[rec] {
				t.Errorf("rsyslog did not record %q; it wrote:\n%s", rec, strings.Join(got[:min(len(got), 5)], "\n"))
				return
			}
		}
	}
}

// TestNoServer: a server that is not there costs nothing: Write never
// blocks, Close returns within its timeout, the lines count as dropped.
func TestNoServer(t *testing.T) {
	s, err := New("tcp://127.0.0.1:1", "h", "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < Queue+10; i++ {
		s.Write([]byte("line\n"))
	}
	if time.Since(start) > time.Second {
		t.Errorf("Write blocked for %s", time.Since(start))
	}
	st := s.Close(2 * time.Second)
	if st.Sent != 0 || st.Dropped < 10 || st.Error == "" {
		t.Errorf("stats %+v", st)
	}
}
