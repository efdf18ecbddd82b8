package bmap

import (
	"math/rand/v2"
	"testing"
)

// benchImage streams a 1 GiB image with 10% data: in every 10 MiB, 1 MiB of
// random data then 9 MiB of zeros, in 1 MiB chunks; zeros go to Zero when
// holes is true, else to Data.
func benchImage(b *testing.B, s sink, data []byte, holes bool) {
	zero := make([]byte, 1<<20)
	for off := int64(0); off < 1<<30; off += 1 << 20 {
		var err error
		switch {
		case off%(10<<20) == 0:
			err = s.Data(data, off)
		case holes:
			err = s.Zero(off, 1<<20)
		default:
			err = s.Data(zero, off)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// benchData is the 1 MiB of random data each 10 MiB of the image starts with.
func benchData() []byte {
	data := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return data
}

// zeroModes runs f as two sub-benchmarks over the 1 GiB image: zeros as
// holes (a sparse image) and zeros as data (a disk).
func zeroModes(b *testing.B, f func(b *testing.B, holes bool)) {
	for _, holes := range []bool{true, false} {
		name := "zeros-as-data"
		if holes {
			name = "holes"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(1 << 30)
			f(b, holes)
		})
	}
}

// BenchmarkChecker checks a 1 GiB image with 10% data against its map, with
// the zeros as holes (a sparse image) and as data (a disk).
func BenchmarkChecker(b *testing.B) {
	data := benchData()
	bld := NewBuilder(4096)
	benchImage(b, bld, data, true)
	m, err := bld.Finish(nil)
	if err != nil {
		b.Fatal(err)
	}
	zeroModes(b, func(b *testing.B, holes bool) {
		for b.Loop() {
			c := NewChecker(m)
			benchImage(b, c, data, holes)
			if err := c.Finish(1 << 30); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBuilder maps the same 1 GiB image with 10% data.
func BenchmarkBuilder(b *testing.B) {
	data := benchData()
	zeroModes(b, func(b *testing.B, holes bool) {
		for b.Loop() {
			bld := NewBuilder(4096)
			benchImage(b, bld, data, holes)
			if _, err := bld.Finish(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
