package imaging

import (
	"bytes"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestXZ decodes what the xz tool writes (one stream, two streams, with
// and without a check) and refuses a cut-off or changed one.
func TestXZ(t *testing.T) {
	gpttest.Need(t, "xz")
	img := zstdImage(10<<20, 11)
	xzOf := func(t *testing.T, data []byte, args ...string) []byte {
		cmd := exec.Command("xz", append([]string{"-c", "-1"}, args...)...)
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		return out
	}
	decode := func(data []byte) ([]byte, error) {
		r, kind, closeDec, err := decompress(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		defer closeDec()
		if kind != "xz" {
			t.Fatalf("detected %s", kind)
		}
		return io.ReadAll(r)
	}
	one := xzOf(t, img)
	half := len(img) / 2
	for _, tc := range []struct {
		name string
		data []byte
		want []byte
		err  string
	}{
		{"one stream", one, img, ""},
		{"crc32 check, 4 threads", xzOf(t, img, "-C", "crc32", "-T4"), img, ""},
		{"sha256 check", xzOf(t, img, "-C", "sha256"), img, ""},
		{"two streams", append(xzOf(t, img[:half]), xzOf(t, img[half:])...), img, ""},
		{"cut off", one[:len(one)-100], nil, "truncated or corrupt"},
		{"changed byte", func() []byte { b := bytes.Clone(one); b[len(b)/2] ^= 0x10; return b }(), nil, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decode(tc.data)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "xz image") {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("decoded %d bytes (equal %v), %v", len(got), bytes.Equal(got, tc.want), err)
			}
		})
	}
}
