package imaging

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// FuzzRestore feeds arbitrary images (raw, or with a compressor's magic
// and junk after it, or a GPT-looking head) through the whole restore
// path: it must either reproduce the bytes exactly or fail with an error,
// never panic or write something else; with a block map made of it, it
// must restore the same and report the same SHA-256.
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
		res, err := Copy(context.Background(), Options{Src: src, Dst: dir + "/out", BufferSize: 4096, Buffers: 2, UndoPath: dir + "/undo"})
		if err != nil {
			return
		}
		// With its block map the image restores the same, and the SHA-256
		// (now taken from the map) is the same.
		if _, err := MakeBmap(context.Background(), Options{Src: src, BufferSize: 4096, Buffers: 2}); err != nil {
			t.Fatalf("MakeBmap of an image that restores: %v", err)
		}
		res2, err := Copy(context.Background(), Options{Src: src, Dst: dir + "/out2", BufferSize: 4096, Buffers: 2, UndoPath: dir + "/undo2"})
		if err != nil {
			t.Fatalf("restore with the image's block map: %v", err)
		}
		if res2.SHA256From != "bmap" || res2.BmapSHA256 != res.SHA256 || res2.SHA256 != "" {
			t.Fatalf("with the map: SHA-256 %q, claimed %s from %q, without: %s", res2.SHA256, res2.BmapSHA256, res2.SHA256From, res.SHA256)
		}
		out1, _ := os.ReadFile(dir + "/out")
		out2, _ := os.ReadFile(dir + "/out2")
		if !bytes.Equal(out1, out2) {
			t.Fatalf("the restores with and without the block map differ")
		}
		if res.UndoPath != "" {
			// The GPT fix-up rewrote some sectors (e.g. rebuilt the backup of
			// a cut-short image at the end of the grown file). Undo exactly
			// those: what remains must be the image, byte for byte.
			dev, err := gpt.OpenDevice(dir+"/out", res.SectorSize, true)
			if err != nil {
				t.Fatal(err)
			}
			err = gpt.ApplyUndo(dev, res.UndoPath)
			dev.Close()
			if err != nil {
				t.Fatalf("undoing the GPT fix-up: %v", err)
			}
		}
		out, _ := os.ReadFile(dir + "/out")
		if int64(len(out)) != res.TargetSize || res.TargetSize < res.Bytes {
			t.Fatalf("target has %d bytes, result says target %d bytes for an image of %d", len(out), res.TargetSize, res.Bytes)
		}
		img, pad := out[:res.Bytes], out[res.Bytes:]
		if res.Compression == "none" && !bytes.Equal(img, data) {
			t.Fatalf("raw image of %d bytes copied as %d different bytes", len(data), len(img))
		}
		if sha256Of(img) != res.SHA256 {
			t.Fatalf("result says %d bytes %s, target's first %d bytes hash to %s", res.Bytes, res.SHA256, len(img), sha256Of(img))
		}
		if !bytes.Equal(pad, make([]byte, len(pad))) {
			t.Fatalf("target has non-zero bytes after the image's end (%d bytes of padding)", len(pad))
		}
	})
}
