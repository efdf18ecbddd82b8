package console

import (
	"bytes"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"quiet", []string{"/dev/console"}},
		{"console=tty0 console=ttyS0,115200n8", []string{"/dev/tty0", "/dev/ttyS0"}},
		{"console=ttyS0 console=ttyS0,9600", []string{"/dev/ttyS0"}},
		{"console=null", []string{"/dev/console"}},
		{"console=../../etc/passwd console=hvc0", []string{"/dev/hvc0"}},
	} {
		if got := Names(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Names(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestMarker(t *testing.T) {
	var a, b bytes.Buffer
	c := New(&a, &b)
	c.now = func() time.Time { return c.start.Add(1500 * time.Millisecond) }
	c.Printf("hello %d", 1)
	c.Marker("FAILED %s", "fix: line one\nline two")
	want := regexp.MustCompile(`^\[\d\d:\d\d:\d\d \+   1\.5s\] hello 1\n\[\d\d:\d\d:\d\d \+   1\.5s\] RESCUE: FAILED fix: line one line two\n$`)
	if !want.MatchString(a.String()) {
		t.Errorf("console got %q", a.String())
	}
	if a.String() != b.String() {
		t.Errorf("writers differ: %q vs %q", a.String(), b.String())
	}
	if strings.Count(a.String(), "RESCUE: ") != 1 {
		t.Errorf("marker count wrong in %q", a.String())
	}
}

func TestOpenFallback(t *testing.T) {
	var buf bytes.Buffer
	c := Open([]string{"/nonexistent/tty"}, &buf)
	c.Marker("DONE ok")
	c.Close()
	if !strings.Contains(buf.String(), "RESCUE: DONE ok") {
		t.Errorf("fallback got %q", buf.String())
	}
}
