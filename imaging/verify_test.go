package imaging

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

// TestVerifyDetects: -verify's read-back notices a changed byte in a data
// region and stale data in a zero region, and says where.
func TestVerifyDetects(t *testing.T) {
	dir := t.TempDir()
	img := dir + "/img"
	makeImage(t, img, 200<<20, 1<<20, 0.3, 91) // > 3 sum groups
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	clear(data[128<<20 : 192<<20]) // one whole sum group of zeros
	zeroOff := int64(128<<20 + 4096)
	dataOff := int64(-1)
	for off := int64(0); off < int64(len(data)) && dataOff < 0; off += 1 << 20 {
		if !zeros.Is(data[off : off+1<<20]) {
			dataOff = off
		}
	}
	for _, tc := range []struct {
		name string
		off  int64
		want string
	}{
		{"data", dataOff + 777, "differ from what was written"},
		{"zero", zeroOff + 4096, "should read back as zeros"},
		{"none", -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(dir + "/out-" + tc.name)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			s := &rawSink{f: f, name: "out", limit: -1, gran: 4096, minZero: 4096, mode: zeroWrite, sums: newWriteSums()}
			for off := int64(0); off < int64(len(data)); off += 4 << 20 {
				if err := s.data(data[off:min(off+4<<20, int64(len(data)))], off); err != nil {
					t.Fatal(err)
				}
			}
			if tc.off >= 0 {
				b := []byte{0}
				f.ReadAt(b, tc.off)
				b[0] ^= 0x40
				f.WriteAt(b, tc.off)
			}
			opt := Options{}
			opt.defaults()
			err = s.sums.verify(context.Background(), &opt, f, f.Name())
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want ErrVerify %q, got %v", tc.want, err)
			}
			t.Logf("detected: %v", err)
		})
	}
}

// TestVerifyProvesMedium: -verify reads the medium, not the page cache.
// The image goes onto loop device A (direct I/O onto its backing file);
// just before a data region is read back, the test reads it through A's
// page cache (so that cache holds the good bytes), then corrupts one byte
// of the backing file through a second loop device B on the same file.
// A verify that trusted A's page cache would pass; -verify must fail
// and name the range. Without the corruption the same restore verifies.
func TestVerifyProvesMedium(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: TestVerifyProvesMedium needs root for two loop devices on one file; -verify's read-back of the medium is NOT tested here")
	}
	needRoot(t)
	dir := t.TempDir()
	img := dir + "/img"
	const size = 24 << 20
	makeImage(t, img, size, 1<<20, 1, 17)
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	backing := dir + "/disk"
	if f, err := os.Create(backing); err != nil || f.Truncate(size) != nil || f.Close() != nil {
		t.Fatal("making the backing file", err)
	}
	devA := gpttest.Loop(t, backing, "--direct-io=on")
	devB := gpttest.Loop(t, backing)

	// Control: the same restore verifies when nothing is corrupted.
	opt := Options{Src: img, Dst: devA, Yes: true, NoGPTFixup: true, Verify: true}
	if _, err := Copy(context.Background(), opt); err != nil {
		t.Fatalf("restore with -verify, nothing corrupted: %v", err)
	}

	var hit int64 = -1
	var premise string
	t.Cleanup(func() { verifyHook = nil })
	verifyHook = func(off, n int64) {
		if hit >= 0 || n < 2*4096 {
			return
		}
		page := (off + 4096) &^ 4095
		hit = page + 100
		a, err := os.Open(devA)
		if err != nil {
			t.Error(err)
			return
		}
		defer a.Close()
		cached := make([]byte, 4096)
		if _, err := a.ReadAt(cached, page); err != nil { // fills A's page cache
			t.Error(err)
			return
		}
		bad := alignedBuf(4096)
		copy(bad, cached)
		bad[100] ^= 0x5a
		b, err := os.OpenFile(devB, os.O_WRONLY|unix.O_DIRECT, 0)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := b.WriteAt(bad, page); err != nil {
			t.Error(err)
		}
		b.Close()
		again := make([]byte, 4096)
		a.ReadAt(again, page)
		if again[100] == want[hit] {
			premise = "A's page cache still held the good byte after the corruption"
		} else {
			premise = "the kernel had dropped A's page cache (the test still checks -verify)"
		}
	}
	_, err = Copy(context.Background(), opt)
	if hit < 0 {
		t.Fatal("the verify hook never ran: no data region was read back")
	}
	t.Logf("corrupted byte %d through %s; %s", hit, devB, premise)
	if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "read back from the medium differ") {
		t.Fatalf("-verify after corrupting the medium under the page cache: want ErrVerify naming the range, got %v", err)
	}
	var lo, hi int64
	if _, serr := fmt.Sscanf(err.Error()[strings.Index(err.Error(), "bytes "):], "bytes %d-%d", &lo, &hi); serr != nil || hit < lo || hit > hi {
		t.Errorf("the error does not name the range holding byte %d: %v", hit, err)
	}
	t.Logf("-verify failed as it must: %v", err)
}
