package bmap

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestChecker(t *testing.T) {
	const bs = 4096
	const size = 3<<20 + 333
	// Ranges: blocks 1-2 (bytes 4096-12288, data from 4101) and the last block 768 (bytes
	// 3145728-3146061, partial).
	img := makeImage(size, 11, extent{bs + 5, 2*bs - 5}, extent{size - 10, 10})
	m := buildMap(t, img, bs, 1, 9999)
	if len(m.Ranges) != 2 || m.Ranges[0].First != 1 || m.Ranges[0].Last != 2 || m.Ranges[1].First != 768 {
		t.Fatalf("unexpected test map: %+v", m.Ranges)
	}
	lastOff, lastEnd := m.ByteRange(m.Ranges[1])
	if lastOff != 768*bs || lastEnd != size {
		t.Fatalf("ByteRange(last) = %d, %d", lastOff, lastEnd)
	}

	// feed streams img (possibly changed) and then n extra zero bytes, and
	// finishes with total.
	type result struct {
		err     error
		checked int
	}
	check := func(img []byte, extra int64, total int64) result {
		c := NewChecker(m)
		err := stream(c, img, 7, 3000)
		if err == nil && extra > 0 {
			err = c.Zero(int64(len(img)), extra)
		}
		if err == nil {
			err = c.Finish(total)
		}
		return result{err, c.RangesChecked()}
	}
	flip := func(off int) []byte {
		b := bytes.Clone(img)
		b[off] ^= 1
		return b
	}
	for _, tc := range []struct {
		name    string
		img     []byte
		extra   int64
		total   int64
		checked int
		want    string         // "" for success
		mis     *MismatchError // the expected *MismatchError, if any
	}{
		{"exact image", img, 0, size, 2, "", nil},
		{"flipped byte in range 1", flip(bs + 100), 0, size, 0,
			"blocks 1-2 (bytes 4096-12287): checksum differs", &MismatchError{4096, 12288, 1, 2, "checksum differs"}},
		{"flipped zero byte inside range 1", flip(bs + 1), 0, size, 0,
			"blocks 1-2 (bytes 4096-12287): checksum differs", &MismatchError{4096, 12288, 1, 2, "checksum differs"}},
		{"flipped byte in the partial last block", flip(size - 1), 0, size, 1,
			"blocks 768-768 (bytes 3145728-3146060): checksum differs", &MismatchError{3145728, size, 768, 768, "checksum differs"}},
		{"non-zero byte before the ranges", flip(17), 0, size, 0,
			"byte 17: non-zero data outside the mapped ranges", &MismatchError{17, 18, -1, -1, "non-zero data outside the mapped ranges"}},
		{"non-zero byte between ranges", flip(1 << 20), 0, size, 1,
			"byte 1048576: non-zero data outside the mapped ranges", &MismatchError{1 << 20, 1<<20 + 1, -1, -1, "non-zero data outside the mapped ranges"}},
		{"wrong total size", img, 0, size + 1, 2, "the image is 3146062 bytes, its map says 3146061 bytes", nil},
		{"image shorter than the last range", img[:size-5], 0, size, 1, "before the end of blocks 768-768", nil},
		{"image ends before the last range", img[:768*bs], 0, size, 1, "before the end of blocks 768-768", nil},
		{"image larger than the map", img, 1, size + 1, 2, "larger than the map's image size", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := check(tc.img, tc.extra, tc.total)
			if tc.want == "" {
				if got.err != nil {
					t.Fatal(got.err)
				}
			} else if got.err == nil || !strings.Contains(got.err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", got.err, tc.want)
			}
			var me *MismatchError
			if errors.As(got.err, &me) != (tc.mis != nil) || tc.mis != nil && *me != *tc.mis {
				t.Errorf("mismatch %+v, want %+v", me, tc.mis)
			}
			if got.checked != tc.checked {
				t.Errorf("RangesChecked = %d, want %d", got.checked, tc.checked)
			}
		})
	}

	// A hole where the map has data: the range's hash gets the zeros and
	// differs.
	c := NewChecker(m)
	if err := c.Data(img[:bs], 0); err != nil {
		t.Fatal(err)
	}
	var me *MismatchError
	if err := c.Zero(bs, 2*bs); !errors.As(err, &me) || me.First != 1 {
		t.Errorf("Zero over range 1: %v, want a mismatch of blocks 1-2", err)
	}
	// The error is sticky.
	if err := c.Zero(3*bs, 1); !errors.As(err, &me) {
		t.Errorf("after a mismatch: %v", err)
	}
}

func TestCheckerErrors(t *testing.T) {
	m, err := Parse(readFixture(t, "v2.0.bmap"))
	if err != nil {
		t.Fatal(err)
	}
	img := readFixture(t, "fixture.img")
	for _, tc := range []struct {
		name string
		m    *Map
		run  func(c *Checker) error
		want string
	}{
		{"invalid map", &Map{ImageSize: 10, BlockSize: 512, BlocksCount: 2}, func(c *Checker) error { return c.Finish(10) }, "invalid map: blocks count 2"},
		{"out of order", m, func(c *Checker) error {
			c.Data(img[:10], 0)
			return c.Data(img[11:20], 11)
		}, "want the next offset 10"},
		{"negative zero run", m, func(c *Checker) error { return c.Zero(0, -5) }, "negative length"},
		{"after Finish", m, func(c *Checker) error {
			c.Data(img, 0)
			c.Finish(5000)
			return c.Data(nil, 5000)
		}, "already finished"},
		{"nothing streamed", m, func(c *Checker) error { return c.Finish(5000) }, "before the end of blocks 0-0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(NewChecker(tc.m)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestMismatchErrorText(t *testing.T) {
	for _, tc := range []struct {
		e    MismatchError
		want string
	}{
		{MismatchError{4096, 8192, 1, 1, "checksum differs"}, "blocks 1-1 (bytes 4096-8191): checksum differs"},
		{MismatchError{17, 18, -1, -1, "non-zero data outside the mapped ranges"}, "byte 17: non-zero data outside the mapped ranges"},
		{MismatchError{17, 30, -1, -1, "x"}, "bytes 17-29: x"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestComplete(t *testing.T) {
	sum := make([]byte, 32)
	for _, tc := range []struct {
		name string
		m    Map
		want bool
	}{
		{"sha256 ranges and image SHA-256", Map{ChecksumType: "sha256", ImageSHA256: sum, Ranges: []Range{{0, 0, sum}}}, true},
		{"no ranges", Map{ChecksumType: "sha256", ImageSHA256: sum}, true},
		{"sha512", Map{ChecksumType: "sha512", ImageSHA256: sum, Ranges: []Range{{0, 0, make([]byte, 64)}}}, true},
		{"no image SHA-256", Map{ChecksumType: "sha256", Ranges: []Range{{0, 0, sum}}}, false},
		{"a range without checksum", Map{ChecksumType: "sha256", ImageSHA256: sum, Ranges: []Range{{0, 0, sum}, {2, 2, nil}}}, false},
		{"md5 can be forged", Map{ChecksumType: "md5", ImageSHA256: sum, Ranges: []Range{{0, 0, make([]byte, 16)}}}, false},
		{"sha1 can be forged", Map{ChecksumType: "sha1", ImageSHA256: sum, Ranges: []Range{{0, 0, make([]byte, 20)}}}, false},
		{"no checksum type", Map{ImageSHA256: sum}, false},
	} {
		if got := tc.m.Complete(); got != tc.want {
			t.Errorf("%s: Complete() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
