package zeros

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFirst(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		at   int // index of the one non-zero byte, -1 for none
	}{
		{"empty", 0, -1},
		{"one zero", 1, -1},
		{"one byte", 1, 0},
		{"all zero, several blocks", 3<<20 + 17, -1},
		{"last byte of a block", 1 << 20, 1<<20 - 1},
		{"first byte of the second block", 2 << 20, 1 << 20},
		{"tail past whole blocks", 2<<20 + 5, 2<<20 + 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := make([]byte, tc.size)
			if tc.at >= 0 {
				p[tc.at] = 0x80
			}
			if got := First(p); got != tc.at {
				t.Errorf("First = %d, want %d", got, tc.at)
			}
			if got := Is(p); got != (tc.at < 0) {
				t.Errorf("Is = %v", got)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	for _, n := range []int64{0, 1, 1 << 20, 3<<20 + 123} {
		h := sha256.New()
		m, err := Write(h, n)
		if err != nil || m != n {
			t.Fatalf("Write(%d) = %d, %v", n, m, err)
		}
		want := sha256.Sum256(make([]byte, n))
		if !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("Write(%d): wrong bytes", n)
		}
	}
	// A failing writer stops Write and says how much went out.
	m, err := Write(&limited{left: 1<<20 + 10}, 3<<20)
	if err == nil || m != 1<<20+10 {
		t.Errorf("limited writer: %d, %v", m, err)
	}
}

type limited struct{ left int }

func (l *limited) Write(p []byte) (int, error) {
	if len(p) > l.left {
		n := l.left
		l.left = 0
		return n, errors.New("full")
	}
	l.left -= len(p)
	return len(p), nil
}

func TestWriteAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := bytes.Repeat([]byte{0xff}, 4<<20)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteAt(f, 1000, 2<<20+1); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	for i, c := range got {
		inside := i >= 1000 && i < 1000+2<<20+1
		if (c == 0) != inside {
			t.Fatalf("byte %d is %#x", i, c)
		}
	}
	f.Close()
	if err := WriteAt(f, 0, 1); err == nil || !bytes.Contains([]byte(err.Error()), []byte("byte 0")) {
		t.Errorf("closed file: %v", err)
	}
}
