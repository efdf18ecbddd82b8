package imaging

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestOpenImage: OpenImage reads images compressed by the stock gzip, xz
// and zstd tools, and plain ones, as the image's bytes and names the
// compression; closing a stream read only in part returns.
func TestOpenImage(t *testing.T) {
	gpttest.Need(t, "gzip", "xz", "zstd")
	raw := tmp(t, "img")
	makeImage(t, raw, 4<<20, 64<<10, 0.5, 3)
	gpttest.Run(t, "sh", "-c", `gzip -k "$1" && xz -k -0 -T2 "$1" && zstd -q "$1" -o "$1.zst"`, "sh", raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ src, comp string }{
		{raw, "none"}, {raw + ".gz", "gzip"}, {raw + ".xz", "xz"}, {raw + ".zst", "zstd"},
	} {
		r, comp, err := OpenImage(context.Background(), Options{Src: tc.src})
		if err != nil {
			t.Fatalf("OpenImage(%s): %v", tc.src, err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Errorf("reading %s: %v", tc.src, err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("closing %s: %v", tc.src, err)
		}
		if comp != tc.comp || !bytes.Equal(got, want) {
			t.Errorf("OpenImage(%s): %s, %d bytes (equal %v); want %s, the image's %d", tc.src, comp, len(got), bytes.Equal(got, want), tc.comp, len(want))
		}
		r, _, err = OpenImage(context.Background(), Options{Src: tc.src})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, 4096)); err != nil {
			t.Errorf("the start of %s: %v", tc.src, err)
		}
		r.Close()
	}
}
