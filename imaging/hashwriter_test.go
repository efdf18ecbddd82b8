package imaging

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestHashWriter: what goes through a hashWriter, in writes of any size,
// reaches the writer in order and whole, and the hash is that of the bytes.
func TestHashWriter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		total      int
		maxWrite   int
		nbuf, size int
	}{
		{"nothing", 0, 1, 2, 16},
		{"less than a buffer", 10, 3, 2, 16},
		{"exactly a buffer", 16, 16, 2, 16},
		{"writes larger than the buffers", 100003, 5000, 2, 64},
		{"many small writes", 70001, 7, 4, 1 << 10},
		{"one buffer", 50000, 999, 1, 128},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.total), 5))
			data := make([]byte, tc.total)
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			var out bytes.Buffer
			h := sha256.New()
			hw := newHashWriter(&out, h, tc.nbuf, tc.size)
			for p := data; len(p) > 0; {
				n := min(len(p), 1+r.IntN(tc.maxWrite))
				if k, err := hw.Write(p[:n]); k != n || err != nil {
					t.Fatalf("Write: %d, %v", k, err)
				}
				p = p[n:]
			}
			if err := hw.Close(); err != nil {
				t.Fatal(err)
			}
			if err := hw.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			want := sha256.Sum256(data)
			if !bytes.Equal(out.Bytes(), data) || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Errorf("wrote %d bytes (want %d), hash %x (want %x)", out.Len(), len(data), h.Sum(nil), want)
			}
		})
	}
}

type failingWriter struct{ n, after int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n+len(p) > f.after {
		return 0, errors.New("disk full")
	}
	f.n += len(p)
	return len(p), nil
}

// TestHashWriterError: a write error comes back from a later Write or from
// Close, and nothing hangs.
func TestHashWriterError(t *testing.T) {
	hw := newHashWriter(&failingWriter{after: 100}, sha256.New(), 2, 64)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = hw.Write(make([]byte, 50))
	}
	cerr := hw.Close()
	if err == nil {
		err = cerr
	}
	if err == nil || err.Error() != "disk full" || cerr == nil {
		t.Errorf("Write: %v, Close: %v; want disk full", err, cerr)
	}
}

// TestHashWriterAbort: after abort nothing more is written, every Write
// fails and Close returns.
func TestHashWriterAbort(t *testing.T) {
	var out bytes.Buffer
	hw := newHashWriter(&out, sha256.New(), 2, 64)
	if _, err := hw.Write(make([]byte, 200)); err != nil {
		t.Fatal(err)
	}
	hw.abort()
	if _, err := hw.Write([]byte{1}); !errors.Is(err, errHashWriterDone) {
		t.Errorf("Write after abort: %v", err)
	}
	if err := hw.Close(); !errors.Is(err, errHashWriterDone) {
		t.Errorf("Close after abort: %v", err)
	}
	if out.Len() > 200 {
		t.Errorf("%d bytes written", out.Len())
	}
	if _, err := hw.Write([]byte{1}); !errors.Is(err, errHashWriterDone) {
		t.Errorf("Write after Close: %v", err)
	}
}
