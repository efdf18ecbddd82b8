package imaging

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

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
			_, err = s.sums.verify(context.Background(), &opt, f, 1<<20, 0)
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
