package imaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

// Benchmarks of the pipeline (go test -bench . ./imaging); bench/run.sh
// compares imgcopy with dd, cp, bmaptool and zstd on big images.

func benchRestore(b *testing.B, size int64, density float64, compress string) {
	dir := b.TempDir()
	src := dir + "/img"
	makeImage(b, src, size, 64<<10, density, 1)
	if compress != "" {
		opt := Options{Src: src, Dst: src + "." + compress, Compress: compress}
		if _, err := Copy(context.Background(), opt); err != nil {
			b.Fatal(err)
		}
		src += "." + compress
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := dir + "/out"
		os.Remove(dst)
		if _, err := Copy(context.Background(), Options{Src: src, Dst: dst}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRestoreDense(b *testing.B)  { benchRestore(b, 64<<20, 1, "") }
func BenchmarkRestoreSparse(b *testing.B) { benchRestore(b, 256<<20, 0.1, "") }
func BenchmarkRestoreZstd(b *testing.B)   { benchRestore(b, 64<<20, 0.5, "zstd") }
func BenchmarkRestoreGzip(b *testing.B)   { benchRestore(b, 64<<20, 0.5, "gzip") }

// BenchmarkPipeline measures reading, hashing and handing chunks over with
// a write that does nothing: the pipeline's own ceiling.
func BenchmarkPipeline(b *testing.B) {
	data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 8<<20) // 64 MiB
	b.SetBytes(int64(len(data)))
	pool := newPool(4, 4<<20)
	for i := 0; i < b.N; i++ {
		_, err := runPipeline(context.Background(), bytes.NewReader(data), pool, nil, false,
			&streamWriter{w: io.Discard}, &shaDigest{h: sha256.New()})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIsZero(b *testing.B) {
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		if !zeros.Is(buf) {
			b.Fatal("not zero")
		}
	}
}

func BenchmarkZeroSink(b *testing.B) {
	dir := b.TempDir()
	f, err := os.Create(dir + "/out")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(buf)))
	s := &rawSink{f: f, name: "out", limit: -1, gran: 4096, minZero: 4096, mode: zeroSkip}
	for i := 0; i < b.N; i++ {
		if err := s.data(buf, int64(i)*int64(len(buf))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestoreDevice restores a dense image onto a loop device with
// direct I/O (root only): the block-device write path, for pprof.
func BenchmarkRestoreDevice(b *testing.B) {
	needRoot(b)
	dir := b.TempDir()
	src := dir + "/img"
	const size = 256 << 20
	makeImage(b, src, size, 1<<20, 1, 3)
	backing := dir + "/disk"
	if f, err := os.Create(backing); err != nil || f.Truncate(size) != nil || f.Close() != nil {
		b.Fatal("making the loop device's backing file", err)
	}
	dev := gpttest.Loop(b, backing, "--direct-io=on")
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Copy(context.Background(), Options{Src: src, Dst: dev, Yes: true, NoGPTFixup: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRestoreDeviceVerify restores an image (dense, or density of 8 MiB
// extents in a sparse file) onto a loop device with direct I/O holding
// stale data, with and without -verify (root only): for pprof of the
// read-back.
func benchRestoreDeviceVerify(b *testing.B, size int64, density float64, verify bool) {
	needRoot(b)
	dir := b.TempDir()
	src := dir + "/img"
	makeImage(b, src, size, 8<<20, density, 5)
	backing := dir + "/disk"
	makeImage(b, backing, size, 8<<20, 1, 6) // stale data everywhere
	dev := gpttest.Loop(b, backing, "--direct-io=on")
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Copy(context.Background(), Options{Src: src, Dst: dev, Yes: true, NoGPTFixup: true, Verify: verify}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRestoreDeviceDense(b *testing.B)        { benchRestoreDeviceVerify(b, 256<<20, 1, false) }
func BenchmarkRestoreDeviceDenseVerify(b *testing.B)  { benchRestoreDeviceVerify(b, 256<<20, 1, true) }
func BenchmarkRestoreDeviceSparse(b *testing.B)       { benchRestoreDeviceVerify(b, 1<<30, 0.1, false) }
func BenchmarkRestoreDeviceSparseVerify(b *testing.B) { benchRestoreDeviceVerify(b, 1<<30, 0.1, true) }
