package bmap

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildMap streams img into a Builder with the given chunking and finishes it
// with the image's SHA-256.
func buildMap(t testing.TB, img []byte, bs int64, seed uint64, maxChunk int) *Map {
	t.Helper()
	b := NewBuilder(bs)
	if err := stream(b, img, seed, maxChunk); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	m, err := b.Finish(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuilder(t *testing.T) {
	const k4 = 4096
	for _, tc := range []struct {
		name    string
		size    int64
		bs      int64
		extents []extent
		want    [][2]int64 // expected ranges, nil: not checked
	}{
		{"odd size, merged and separate ranges", 5<<20 + 777, k4,
			[]extent{{0, 100}, {3*k4 + 10, 5000}, {600 * k4, 1}, {5<<20 + 700, 77}},
			// 0 and 3-4 merge (gap 2 blocks); 600 is > 1 MiB away; the last
			// partial block 1280 is > 1 MiB from 600.
			[][2]int64{{0, 4}, {600, 600}, {1280, 1280}}},
		{"all zero", 3<<20 + 1, k4, nil, [][2]int64{}},
		{"all data, 512-byte blocks", 70001, 512, []extent{{0, 70001}}, [][2]int64{{0, 136}}},
		{"one byte at the end", 1<<20 + 100, 512, []extent{{1<<20 + 99, 1}}, [][2]int64{{2048, 2048}}},
		{"non-zero byte late in a block", 64 * k4, k4, []extent{{10*k4 + 4000, 1}}, [][2]int64{{10, 10}}},
		// With 64 KiB blocks, a gap of 15 blocks is < MergeGap and merged,
		// a gap of 16 blocks (exactly MergeGap) is not.
		{"gap just below MergeGap", 40 << 16, 1 << 16, []extent{{0, 1}, {16 << 16, 1}}, [][2]int64{{0, 16}}},
		{"gap of exactly MergeGap", 40 << 16, 1 << 16, []extent{{0, 1}, {17 << 16, 1}}, [][2]int64{{0, 0}, {17, 17}}},
		{"block of MergeGap", 3<<20 + 1, 1 << 20, []extent{{1, 1}, {2<<20 + 5, 3}}, [][2]int64{{0, 0}, {2, 2}}},
		{"adjacent blocks of MergeGap", 3<<20 + 1, 1 << 20, []extent{{1, 1}, {1<<20 + 5, 3}, {3 << 20, 1}}, [][2]int64{{0, 1}, {3, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := makeImage(tc.size, 5, tc.extents...)
			m := buildMap(t, img, tc.bs, 1, 10000)
			if m.ImageSize != tc.size || m.BlockSize != tc.bs || m.BlocksCount != (tc.size+tc.bs-1)/tc.bs ||
				m.ChecksumType != "sha256" || m.Version != "2.0" || !m.Complete() {
				t.Errorf("got %+v", m)
			}
			if tc.want != nil {
				var got [][2]int64
				for _, r := range m.Ranges {
					got = append(got, [2]int64{r.First, r.Last})
				}
				if len(got) != len(tc.want) || len(got) > 0 && !equalPairs(got, tc.want) {
					t.Errorf("ranges %v, want %v", got, tc.want)
				}
			}
			// Another chunking, with different Data/Zero choices, gives the
			// same map.
			if m2 := buildMap(t, img, tc.bs, 99, 777777); !mapsEqual(m, m2) {
				t.Errorf("the map depends on the chunking:\n%+v\n%+v", m, m2)
			}
			data := m.Marshal()
			back, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse(Marshal()): %v\n%s", err, data)
			}
			if !mapsEqual(m, back) {
				t.Errorf("Parse(Marshal()) = %+v, want %+v", back, m)
			}
			c := NewChecker(m)
			if err := stream(c, img, 3, 5000); err != nil {
				t.Fatal(err)
			}
			if err := c.Finish(tc.size); err != nil {
				t.Fatal(err)
			}

			// bmaptool accepts the map (with the extension element) and
			// copies the image; cmp(1) compares.
			dir := t.TempDir()
			image, bmapPath := filepath.Join(dir, "image"), filepath.Join(dir, "image.bmap")
			writeSparse(t, image, img)
			if err := os.WriteFile(bmapPath, data, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := bmaptoolCopy(t, bmapPath, image)
			if err != nil {
				t.Fatal(err)
			}
			outPath := filepath.Join(dir, "out")
			if err := os.WriteFile(outPath, out, 0o644); err != nil {
				t.Fatal(err)
			}
			cmpFiles(t, image, outPath)

			// bmaptool really checks our range checksums: a changed byte
			// inside a range makes it fail.
			if len(m.Ranges) > 0 {
				off, _ := m.ByteRange(m.Ranges[0])
				img[off] ^= 0x80
				writeSparse(t, image, img)
				if _, err := bmaptoolCopy(t, bmapPath, image); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
					t.Errorf("bmaptool copy of a changed image: %v, want a checksum mismatch", err)
				}
			}
		})
	}
}

func equalPairs(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBuilderHugeZero: a 16 GiB hole costs nothing, whether it is outside
// any range or continues a mapped block.
func TestBuilderHugeZero(t *testing.T) {
	const gib16 = 16 << 30
	b := NewBuilder(4096)
	steps := []func() error{
		func() error { return b.Data([]byte{1, 2, 3}, 0) },
		func() error { return b.Zero(3, gib16) },
		func() error { return b.Data([]byte{4}, 3+gib16) },
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	m, err := b.Finish(nil)
	if err != nil {
		t.Fatal(err)
	}
	last := int64(3+gib16) / 4096
	if len(m.Ranges) != 2 || m.Ranges[0].First != 0 || m.Ranges[0].Last != 0 || m.Ranges[1].First != last || m.Ranges[1].Last != last {
		t.Errorf("ranges %+v", m.Ranges)
	}
	if m.ImageSHA256 != nil || m.Complete() {
		t.Errorf("ImageSHA256 %x, Complete %v: want absent", m.ImageSHA256, m.Complete())
	}
	// The first range is block 0: 3 data bytes and 4093 zeros.
	blk := make([]byte, 4096)
	copy(blk, []byte{1, 2, 3})
	if sum := sha256.Sum256(blk); string(sum[:]) != string(m.Ranges[0].Checksum) {
		t.Errorf("block 0 checksum %x, want %x", m.Ranges[0].Checksum, sum)
	}
	c := NewChecker(m)
	if err := c.Data([]byte{1, 2, 3}, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Zero(3, gib16); err != nil {
		t.Fatal(err)
	}
	if err := c.Data([]byte{4}, 3+gib16); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(4 + gib16); err != nil {
		t.Fatal(err)
	}
}

func TestBuilderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		bs   int64
		run  func(b *Builder) error
		want string
	}{
		{"block size not a power of two", 1000, func(b *Builder) error { return b.Data([]byte{1}, 0) }, "not a power of two"},
		{"block size too small", 256, func(b *Builder) error { _, err := b.Finish(nil); return err }, "not a power of two"},
		{"block size too large for bmaptool", 2 << 20, func(b *Builder) error { return b.Zero(0, 1) }, "a power of two from 512 to 1048576"},
		{"gap in the stream", 512, func(b *Builder) error {
			b.Data([]byte{1}, 0)
			return b.Data([]byte{1}, 2)
		}, "want the next offset 1"},
		{"going back", 512, func(b *Builder) error {
			b.Zero(0, 100)
			return b.Zero(50, 1)
		}, "want the next offset 100"},
		{"negative zero run", 512, func(b *Builder) error { return b.Zero(0, -1) }, "negative length"},
		{"absurd size", 512, func(b *Builder) error { return b.Zero(0, 1<<62) }, "image larger than"},
		{"empty image", 512, func(b *Builder) error { _, err := b.Finish(nil); return err }, "empty image"},
		{"bad image SHA-256", 512, func(b *Builder) error {
			b.Data([]byte{1}, 0)
			_, err := b.Finish([]byte{1, 2})
			return err
		}, "image SHA-256 is 2 bytes"},
		{"data after Finish", 512, func(b *Builder) error {
			b.Data([]byte{1}, 0)
			b.Finish(nil)
			return b.Data([]byte{1}, 1)
		}, "already finished"},
		{"Finish twice", 512, func(b *Builder) error {
			b.Data([]byte{1}, 0)
			b.Finish(nil)
			_, err := b.Finish(nil)
			return err
		}, "already finished"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(NewBuilder(tc.bs))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
			if errors.Is(err, errDone) != (tc.want == "already finished") {
				t.Errorf("errors.Is(%v, errDone) is wrong", err)
			}
		})
	}
}

// TestBuilderHashImage: with HashImage the Builder makes the same map and
// records the image's SHA-256, whichever way the image is chunked, whether
// its first range starts at block 0 (shared hashing) or later, with zero
// runs inside or after a mapped block, and for an all-zero image.
func TestBuilderHashImage(t *testing.T) {
	const k4 = 4096
	for _, tc := range []struct {
		name    string
		size    int64
		extents []extent
	}{
		{"dense", 3<<20 + 5, []extent{{0, 3<<20 + 5}}},
		{"dense, zero blocks merged", 3 << 20, []extent{{0, 1 << 20}, {1<<20 + 3*k4, 2<<20 - 3*k4}}},
		{"first range from 0, then a gap of MergeGap", 4 << 20, []extent{{5, 100}, {1<<20 + 2*k4 + 7, 9}, {3 << 20, 1}}},
		{"first range later", 4 << 20, []extent{{2<<20 + 11, 5000}, {4<<20 - 1, 1}}},
		{"block 0 mapped late in the block", 2 << 20, []extent{{k4 - 1, 1}, {1 << 20, 1}}},
		{"data ends mid-block, zeros after", 3<<20 + 100, []extent{{0, 10}, {2<<20 + 1, 1}}},
		{"image ends mid-block", 1<<20 + 17, []extent{{0, 3}, {1<<20 + 16, 1}}},
		{"all zero", 2<<20 + 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := makeImage(tc.size, 9, tc.extents...)
			want := buildMap(t, img, k4, 1, 10000)
			sum := sha256.Sum256(img)
			for _, seed := range []uint64{1, 2, 3} {
				b := NewBuilder(k4)
				if err := b.HashImage(); err != nil {
					t.Fatal(err)
				}
				if err := stream(b, img, seed, 1<<uint(12+seed*3)); err != nil {
					t.Fatal(err)
				}
				m, err := b.Finish(nil)
				if err != nil {
					t.Fatal(err)
				}
				if !mapsEqual(m, want) {
					t.Errorf("seed %d: map %+v, want %+v", seed, m, want)
				}
				if got := b.ImageSHA256(); string(got) != string(sum[:]) || string(m.ImageSHA256) != string(sum[:]) {
					t.Errorf("seed %d: image SHA-256 %x (map %x), want %x", seed, got, m.ImageSHA256, sum)
				}
			}
		})
	}
	b := NewBuilder(k4)
	if err := b.Data([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.HashImage(); err == nil {
		t.Error("HashImage after the first byte: no error")
	}
	if b.ImageSHA256() != nil {
		t.Error("ImageSHA256 without HashImage is not nil")
	}
	// An empty image has no map, but its SHA-256 is known.
	e := NewBuilder(k4)
	if err := e.HashImage(); err != nil {
		t.Fatal(err)
	}
	empty := sha256.Sum256(nil)
	if _, err := e.Finish(nil); err == nil || string(e.ImageSHA256()) != string(empty[:]) {
		t.Errorf("empty image: Finish error %v, ImageSHA256 %x; want an error and %x", err, e.ImageSHA256(), empty)
	}
}
