package bmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/esxi-rescue/rescue/internal/zeros"
)

// FuzzParse: Parse never panics, and any map it accepts is written by Marshal
// as a file that Parse reads back as the same map (version 2.0, and sha256
// for a map without a checksum type).
func FuzzParse(f *testing.F) {
	for _, name := range []string{"v1.2.bmap", "v1.3.bmap", "v1.4.bmap", "v2.0.bmap"} {
		f.Add(readFixture(f, name))
	}
	img := makeImage(1<<20+3, 1, extent{0, 10}, extent{5000, 20000}, extent{1 << 20, 3})
	f.Add(buildMap(f, img, 512, 1, 4096).Marshal())
	f.Add([]byte(`<bmap version="1.2"><ImageSize>1</ImageSize><BlockSize>512</BlockSize><BlocksCount>1</BlocksCount><MappedBlocksCount>1</MappedBlocksCount><BlockMap><Range>0</Range></BlockMap></bmap>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fuzzer can hardly forge a file checksum: also parse the input
		// with its checksum fixed, to reach the checks behind it.
		roundTrip(t, data)
		if fixed := fixFileSum(data); !bytes.Equal(fixed, data) {
			roundTrip(t, fixed)
		}
	})
}

// roundTrip checks that a map Parse accepts survives Marshal and Parse.
func roundTrip(t *testing.T, data []byte) {
	m, err := Parse(data)
	if err != nil {
		return
	}
	out := m.Marshal()
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(Marshal()) of an accepted map: %v\n%s", err, out)
	}
	want := *m
	want.Version = "2.0"
	if want.ChecksumType == "" {
		want.ChecksumType = "sha256"
	}
	if !mapsEqual(&want, back) {
		t.Fatalf("round trip changed the map:\n%+v\n%+v", &want, back)
	}
	if !bytes.Equal(back.Marshal(), out) {
		t.Fatal("Marshal is not stable")
	}
}

// fuzzImage turns a fuzz program into an image and feeds it to the Builder:
// each step is an op byte and a 16-bit length: data taken from the program,
// zero bytes passed as data, or a zero run passed to Zero (up to ~1 MiB).
// The image is kept under about 9 MiB.
func fuzzImage(b *Builder, prog []byte) ([]byte, error) {
	var img []byte
	for len(prog) >= 3 && len(img) < 8<<20 {
		op, n := prog[0], int(binary.LittleEndian.Uint16(prog[1:3]))
		prog = prog[3:]
		off := int64(len(img))
		var err error
		switch op % 3 {
		case 0: // data from the program
			n = min(n%8192+1, len(prog))
			err = b.Data(prog[:n], off)
			img = append(img, prog[:n]...)
			prog = prog[n:]
		case 1: // zeros passed as data
			n %= 8192
			z := make([]byte, n)
			err = b.Data(z, off)
			img = append(img, z...)
		case 2: // a hole
			n *= 17
			err = b.Zero(off, int64(n))
			img = append(img, make([]byte, n)...)
		}
		if err != nil {
			return nil, err
		}
	}
	return img, nil
}

// FuzzBuilderChecker: a map built from any stream of data and zero runs is
// accepted by a Checker fed the same image in other chunks, has minimal
// ranges (first and last block non-zero, gaps between ranges at least
// MergeGap), round-trips through Marshal, and any changed byte is rejected.
func FuzzBuilderChecker(f *testing.F) {
	f.Add([]byte{0, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 2, 0xff, 0xff, 0, 3, 0, 'a', 'b', 'c'}, uint8(0), uint32(5), uint8(1))
	f.Add([]byte{2, 1, 0, 1, 200, 0, 0, 4, 0, 0, 0, 0, 7}, uint8(3), uint32(99999), uint8(7))
	f.Add([]byte{0, 0xff, 0xff, 0xaa, 0xbb, 2, 0x40, 0x2a, 0, 2, 0, 9, 9}, uint8(11), uint32(1<<20), uint8(3))
	f.Fuzz(func(t *testing.T, prog []byte, bsExp uint8, flipAt uint32, flipBit uint8) {
		bs := int64(512) << (bsExp % 12)
		b := NewBuilder(bs)
		img, err := fuzzImage(b, prog)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(img)
		m, err := b.Finish(sum[:])
		if len(img) == 0 {
			if err == nil {
				t.Fatal("Finish accepted an empty image")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.ImageSize != int64(len(img)) || !m.Complete() {
			t.Fatalf("map %+v of a %d-byte image", m, len(img))
		}
		for i, r := range m.Ranges {
			for _, blk := range []int64{r.First, r.Last} {
				if zeros.Is(img[blk*bs : min((blk+1)*bs, int64(len(img)))]) {
					t.Fatalf("range %d-%d: block %d is all zero", r.First, r.Last, blk)
				}
			}
			if i > 0 && (r.First-m.Ranges[i-1].Last-1)*bs < MergeGap {
				t.Fatalf("ranges %d-%d and %d-%d are closer than MergeGap", m.Ranges[i-1].First, m.Ranges[i-1].Last, r.First, r.Last)
			}
		}
		if back, err := Parse(m.Marshal()); err != nil || !mapsEqual(m, back) {
			t.Fatalf("Parse(Marshal()) = %+v, %v; want %+v", back, err, m)
		}
		// A Builder hashing the image itself makes the same map, with the
		// image's SHA-256.
		hb := NewBuilder(bs)
		if err := hb.HashImage(); err != nil {
			t.Fatal(err)
		}
		if _, err := fuzzImage(hb, prog); err != nil {
			t.Fatal(err)
		}
		if hm, err := hb.Finish(nil); err != nil || !mapsEqual(m, hm) || string(hb.ImageSHA256()) != string(sum[:]) {
			t.Fatalf("with HashImage: %+v, %v, image SHA-256 %x; want %+v, %x", hm, err, hb.ImageSHA256(), m, sum)
		}
		c := NewChecker(m)
		if err := stream(c, img, uint64(flipAt), 1<<16); err != nil {
			t.Fatal(err)
		}
		if err := c.Finish(int64(len(img))); err != nil {
			t.Fatal(err)
		}
		if c.RangesChecked() != len(m.Ranges) {
			t.Fatalf("RangesChecked = %d of %d", c.RangesChecked(), len(m.Ranges))
		}

		img[int(flipAt)%len(img)] ^= 1 << (flipBit % 8)
		err = stream(NewChecker(m), img, uint64(flipBit), 1<<16)
		var me *MismatchError
		if !errors.As(err, &me) {
			t.Fatalf("byte %d changed: got %v, want a MismatchError", int(flipAt)%len(img), err)
		}
	})
}
