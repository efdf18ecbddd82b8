package imaging

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// FuzzRestore feeds arbitrary images (raw, or with a compressor's magic
// and junk after it, or a GPT-looking head) through the whole restore
// path: it must either reproduce the bytes exactly or fail with an error,
// never panic or write something else.
func FuzzRestore(f *testing.F) {
	f.Add([]byte("hello"))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 1, 2})
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4})
	head := make([]byte, 4096)
	copy(head[512:], "EFI PART")
	f.Add(head)
	// A whole valid GPT disk of 128 sectors from the independent encoder.
	efi := gpttest.Part{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 40, Last: 90, Name: "EFI"}
	f.Add(gpttest.NewTable(f, 512, 128*512, []gpttest.Part{efi}).Image(f, 128))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		dir := t.TempDir()
		src := dir + "/img"
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := Copy(context.Background(), Options{Src: src, Dst: dir + "/out", BufferSize: 4096, Buffers: 2})
		if err != nil {
			return
		}
		out, _ := os.ReadFile(dir + "/out")
		if res.Compression == "none" && !bytes.Equal(out, data) {
			t.Fatalf("raw image of %d bytes copied as %d different bytes", len(data), len(out))
		}
		if int64(len(out)) != res.Bytes || sha256Of(out) != res.SHA256 {
			t.Fatalf("result says %d bytes %s, target has %d bytes %s", res.Bytes, res.SHA256, len(out), sha256Of(out))
		}
	})
}
