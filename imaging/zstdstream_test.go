package imaging

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// zstdImage returns an image of size bytes that is mostly zeros: data
// extents (random, or a repeating pattern that zstd matches far back) with
// long zero runs between them, and a few short ones inside.
func zstdImage(size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	img := make([]byte, size)
	for off := 0; off < size; {
		off += rng.IntN(6 << 20) // zeros
		n := min(rng.IntN(1<<20)+1, size-max(off, 0))
		if off >= size {
			break
		}
		switch rng.IntN(3) {
		case 0: // random
			for i := range n {
				img[off+i] = byte(rng.Uint32())
			}
		case 1: // a pattern repeating far back, and zeros inside it
			for i := range n {
				if i%8192 < 4096 {
					img[off+i] = byte(i % 251)
				}
			}
		default: // text-like, compressible
			for i := range n {
				img[off+i] = "abcdefgh \n"[rng.IntN(10)]
			}
		}
		off += n
	}
	return img
}

// decodeStream reads all of r as the pipeline does: holes through skipHole.
func decodeStream(t testing.TB, data []byte) ([]byte, error) {
	r, kind, closeDec, err := decompress(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer closeDec()
	if kind != "zstd" {
		t.Fatalf("detected %s", kind)
	}
	hs, ok := r.(holeSkipper)
	if !ok {
		t.Fatal("the zstd stream is no holeSkipper")
	}
	var out bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		if n := hs.skipHole(3 << 20); n > 0 {
			out.Write(make([]byte, n))
			continue
		}
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// TestZstdStream decodes images written by the zstd tool (one frame, -T0,
// several frames, --long windows, skippable frames, small single-segment
// frames) and by klauspost's encoder, and compares the bytes with what
// zstd -d makes of them.
func TestZstdStream(t *testing.T) {
	gpttest.Need(t, "zstd", "cmp")
	dir := t.TempDir()
	img := zstdImage(40<<20, 7)
	raw := filepath.Join(dir, "img")
	if err := os.WriteFile(raw, img, 0o644); err != nil {
		t.Fatal(err)
	}
	half := filepath.Join(dir, "half")
	if err := os.WriteFile(half, img[:len(img)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	zstdCmd := func(t *testing.T, out string, args ...string) {
		t.Helper()
		cmd := exec.Command("zstd", append([]string{"-q", "-f", "-o", out}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("zstd %v: %v\n%s", args, err, b)
		}
	}
	skippable := func(payload string) []byte {
		b := binary.LittleEndian.AppendUint32(nil, 0x184D2A5E)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
		return append(b, payload...)
	}
	for _, tc := range []struct {
		name string
		make func(t *testing.T) []byte
	}{
		{"zstd -3", func(t *testing.T) []byte { zstdCmd(t, raw+".zst", "-3", raw); return read(t, raw+".zst") }},
		{"zstd -T0 -3", func(t *testing.T) []byte { zstdCmd(t, raw+".zst", "-T0", "-3", raw); return read(t, raw+".zst") }},
		{"zstd -1 --no-check", func(t *testing.T) []byte {
			zstdCmd(t, raw+".zst", "-1", "--no-check", raw)
			return read(t, raw+".zst")
		}},
		{"zstd --long=24 -19", func(t *testing.T) []byte {
			zstdCmd(t, raw+".zst", "--long=24", "-9", raw)
			return read(t, raw+".zst")
		}},
		{"stdin: no content size", func(t *testing.T) []byte {
			cmd := exec.Command("zstd", "-q", "-c", "-3")
			cmd.Stdin = bytes.NewReader(img)
			b, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"two frames and skippable frames", func(t *testing.T) []byte {
			zstdCmd(t, half+".zst", "-3", half)
			a := read(t, half+".zst")
			out := append(skippable("seek table"), a...)
			out = append(out, skippable("")...)
			return append(out, a...)
		}},
		{"small single-segment frame", func(t *testing.T) []byte {
			small := filepath.Join(dir, "small")
			if err := os.WriteFile(small, append(make([]byte, 300<<10), img[len(img)-5000:]...), 0o644); err != nil {
				t.Fatal(err)
			}
			zstdCmd(t, small+".zst", "-3", small)
			return read(t, small+".zst")
		}},
		{"klauspost encoder", func(t *testing.T) []byte {
			var b bytes.Buffer
			enc, err := zstd.NewWriter(&b, zstd.WithEncoderConcurrency(2))
			if err != nil {
				t.Fatal(err)
			}
			enc.Write(img)
			enc.Close()
			return b.Bytes()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			comp := tc.make(t)
			got, err := decodeStream(t, comp)
			if err != nil {
				t.Fatalf("decoding: %v", err)
			}
			// The reference: the zstd tool itself, compared with cmp.
			zpath := filepath.Join(dir, "c.zst")
			if err := os.WriteFile(zpath, comp, 0o644); err != nil {
				t.Fatal(err)
			}
			zstdCmd(t, filepath.Join(dir, "want"), "-d", zpath)
			if err := os.WriteFile(filepath.Join(dir, "got"), got, 0o644); err != nil {
				t.Fatal(err)
			}
			if b, err := exec.Command("cmp", filepath.Join(dir, "want"), filepath.Join(dir, "got")).CombinedOutput(); err != nil {
				t.Fatalf("cmp: %v: %s", err, b)
			}
		})
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestZstdStreamCorrupt: a changed byte in the data, a wrong checksum, a
// wrong content size, a cut-off stream and junk after the frame are each
// an error (and never a clean end).
func TestZstdStreamCorrupt(t *testing.T) {
	img := zstdImage(12<<20, 3)
	var b bytes.Buffer
	enc, err := zstd.NewWriter(&b, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(img)
	enc.Close()
	good := b.Bytes()
	if got, err := decodeStream(t, good); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("the good stream: %v (equal %v)", err, bytes.Equal(got, img))
	}
	// A raw block (random data) to change a byte in: the first block
	// header after the frame header with type 0 and a big size.
	rawAt := -1
	for p := 6; p+3 < len(good); {
		h := uint32(good[p]) | uint32(good[p+1])<<8 | uint32(good[p+2])<<16
		typ, size := (h>>1)&3, int(h>>3)
		if typ == 0 && size > 1000 {
			rawAt = p + 3 + size/2
			break
		}
		if typ == 1 {
			size = 1
		}
		p += 3 + size
	}
	if rawAt < 0 {
		t.Fatal("no raw block in the test stream")
	}
	mod := func(f func([]byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"changed data byte", mod(func(b []byte) []byte { b[rawAt] ^= 1; return b }), "checksum"},
		{"changed checksum", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), "checksum"},
		{"cut in a block", good[:rawAt], "unexpected EOF"},
		{"cut before the checksum", good[:len(good)-2], "unexpected EOF"},
		{"junk after the frame", append(bytes.Clone(good), 1, 2, 3, 4, 5), "magic"},
		{"content size too big", withFCS(t, img, 1), "its header says"},
		{"content size too small", withFCS(t, img, -1), "its header says"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStream(t, tc.data)
			if err == nil || err == io.ErrUnexpectedEOF || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "zstd image") {
				t.Errorf("error %v does not name the zstd image", err)
			}
		})
	}
}

// withFCS compresses img with the zstd tool (a frame with a window and
// its content size) and adds delta to the content size in the header.
func withFCS(t *testing.T, img []byte, delta int) []byte {
	gpttest.Need(t, "zstd")
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("zstd", "-q", "-3", path).CombinedOutput(); err != nil {
		t.Fatalf("zstd: %v: %s", err, b)
	}
	b := read(t, path+".zst")
	fhd := b[4]
	if fhd&0x20 != 0 || fhd>>6 != 2 || fhd&3 != 0 {
		t.Fatalf("unexpected frame header %02x", fhd)
	}
	fcs := binary.LittleEndian.Uint32(b[6:])
	binary.LittleEndian.PutUint32(b[6:], uint32(int(fcs)+delta))
	return b
}

// FuzzZstdStream compares the hole-skipping decoder with klauspost's plain
// one on arbitrary input: the same bytes, or both an error.
func FuzzZstdStream(f *testing.F) {
	img := zstdImage(3<<20, 5)
	for _, lvl := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithWindowSize(1<<17))
		f.Add(enc.EncodeAll(img[:1<<20], nil))
		f.Add(enc.EncodeAll(make([]byte, 1<<20), nil))
		enc.Close()
	}
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x03, 0x00, 0x10, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 || string(data[:4]) != "\x28\xb5\x2f\xfd" {
			return
		}
		dec, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			t.Fatal(err)
		}
		want, werr := io.ReadAll(io.LimitReader(dec, 64<<20))
		dec.Close()
		if len(want) >= 64<<20 {
			return
		}
		got, gerr := decodeStream(t, data)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("klauspost: %v, ours: %v", werr, gerr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("different bytes: %x vs %x", sha256.Sum256(got), sha256.Sum256(want))
		}
	})
}

// TestXXHZeros: adding zeros through the lanes gives the digest that
// hashing them does, from every partial stripe, for short and long runs.
func TestXXHZeros(t *testing.T) {
	for _, pre := range []int{0, 1, 31, 32, 33, 100} {
		for _, n := range []int64{0, 1, 31, 32, 33, 64, 1000, 1<<20 + 7} {
			prefix := bytes.Repeat([]byte{0xa5}, pre)
			want := xxhash.New()
			want.Write(prefix)
			want.Write(make([]byte, n))
			got := xxhash.New()
			got.Write(prefix)
			xxhZeros(got, n)
			got.Write([]byte("tail"))
			want.Write([]byte("tail"))
			if got.Sum64() != want.Sum64() {
				t.Errorf("prefix %d, %d zeros: %x, want %x", pre, n, got.Sum64(), want.Sum64())
			}
		}
	}
}
