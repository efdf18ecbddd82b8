package imaging

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/udpcast"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/therootcompany/xz"
	"golang.org/x/sys/unix"
)

// source is an opened image source: raw bytes as they come (maybe compressed).
type source struct {
	name    string
	r       io.Reader // raw bytes
	size    int64     // raw size, -1 when unknown
	isBlock bool
	file    *os.File // for files and devices
	dev     *devReader
	closers []func() error
	count   atomic.Int64 // raw bytes consumed
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.count.Add(int64(n))
	return n, err
}

// skipHole implements holeSkipper for a sparse image file.
func (s *source) skipHole(max int64) int64 {
	if s.dev == nil {
		return 0
	}
	n := s.dev.skipHole(max)
	s.count.Add(n)
	return n
}

func (s *source) Close() error {
	var first error
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// openSource opens opt.Src for reading.
func openSource(ctx context.Context, opt *Options) (*source, error) {
	if udpcast.IsURL(opt.Src) {
		return openUdpcast(ctx, opt)
	}
	if isRemote(opt.Src) {
		return openRemote(ctx, opt)
	}
	if isURL(opt.Src) {
		h, size, err := openHTTPSource(ctx, opt)
		if err != nil {
			return nil, err
		}
		return &source{name: opt.Src, r: h, size: size, closers: []func() error{h.Close}}, nil
	}
	var f *os.File
	if opt.Src == "-" {
		f = os.Stdin
	} else {
		var err error
		if f, err = os.Open(opt.Src); err != nil {
			return nil, fmt.Errorf("opening source: %w", err)
		}
	}
	s := &source{name: opt.Src, file: f, size: -1}
	if opt.Src != "-" {
		s.closers = append(s.closers, f.Close)
	}
	fi, err := f.Stat()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("source %s: %w", opt.Src, err)
	}
	switch {
	case fi.Mode().IsRegular():
		s.size = fi.Size()
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		s.isBlock = true
		if s.size, err = blockSize(f); err != nil {
			s.Close()
			return nil, fmt.Errorf("source %s: %w", opt.Src, err)
		}
	}
	if s.size >= 0 && opt.Src != "-" {
		// A shared lock: a disk or image that gptfix or another imgcopy
		// is writing (they hold the exclusive lock) is not read half-written.
		if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
			s.Close()
			return nil, refused("the source %s is being written by another program (gptfix, imgcopy: it holds the disk's lock)", opt.Src)
		}
	}
	if s.size >= 0 {
		// Seekable: read with pread so a failing sector can be pinned down and skipped.
		ss := opt.SectorSize
		if s.isBlock {
			if v, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && v > 0 {
				ss = v
			}
		}
		if ss <= 0 {
			ss = 512
		}
		s.dev = &devReader{f: faultHook(f), size: s.size, sector: ss, skipBad: opt.SkipBad, log: opt.logf}
		if !s.isBlock {
			s.dev.holes = f // a sparse image file: holes are known zeros, not read
		}
		s.r = s.dev
		if opt.Src != "-" {
			// Tell the kernel we read sequentially (bigger readahead).
			_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
		}
	} else {
		s.r = f
	}
	return s, nil
}

// faultHook lets tests inject read errors below the devReader (as a
// failing disk returns EIO); it is the identity otherwise.
var faultHook = func(r io.ReaderAt) io.ReaderAt { return r }

// blockSize returns the size in bytes of an opened block device.
func blockSize(f *os.File) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of block device: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return n, nil
}

// devReader reads a file or device sequentially with pread. On a read error
// it retries sector by sector to find the failing LBA; with skipBad it fills
// unreadable sectors with zeros and records them.
type devReader struct {
	f       io.ReaderAt
	off     int64
	size    int64
	sector  int
	skipBad bool
	bad     []Range
	log     func(string, ...any)
	// holes, when set, is asked with SEEK_DATA/SEEK_HOLE where the data
	// is; holes are returned as zeros without reading them.
	holes   *os.File
	dataEnd int64 // end of the data region d.off is in (when > d.off)
	holeEnd int64 // end of the hole d.off is in (when > d.off)
}

// nextRegion returns, for the bytes at d.off, whether they are a hole and
// how many bytes the region has from there.
func (d *devReader) nextRegion() (hole bool, n int64) {
	if d.off < d.dataEnd {
		return false, d.dataEnd - d.off
	}
	if d.off < d.holeEnd {
		return true, d.holeEnd - d.off
	}
	fd := int(d.holes.Fd())
	data, err := unix.Seek(fd, d.off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		d.holeEnd = d.size // only a hole up to the end
		return true, d.size - d.off
	case err != nil:
		d.holes = nil // not supported: read everything
		return false, d.size - d.off
	case data > d.off:
		d.holeEnd = min(data, d.size)
		return true, d.holeEnd - d.off
	}
	end, err := unix.Seek(fd, d.off, unix.SEEK_HOLE)
	if err != nil || end <= d.off {
		d.holes = nil
		return false, d.size - d.off
	}
	d.dataEnd = min(end, d.size)
	return false, d.dataEnd - d.off
}

// skipHole moves past up to max bytes of a hole at d.off.
func (d *devReader) skipHole(max int64) int64 {
	if d.holes == nil || d.off >= d.size {
		return 0
	}
	hole, n := d.nextRegion()
	if !hole {
		return 0
	}
	n = min(n, max, d.size-d.off)
	d.off += n
	return n
}

func (d *devReader) Read(p []byte) (int, error) {
	if d.off >= d.size {
		return 0, io.EOF
	}
	if rem := d.size - d.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	if d.holes != nil {
		hole, n := d.nextRegion()
		if int64(len(p)) > n {
			p = p[:n]
		}
		if hole {
			clear(p)
			d.off += int64(len(p))
			return len(p), nil
		}
	}
	n, err := d.f.ReadAt(p, d.off)
	if err == nil || (errors.Is(err, io.EOF) && n > 0) {
		d.off += int64(n)
		return n, nil
	}
	if errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("source ended at byte %d, expected %d bytes: %w", d.off, d.size, io.ErrUnexpectedEOF)
	}
	// A read error: go sector by sector over the rest of p.
	done := n - n%d.sector
	for done < len(p) {
		end := min(done+d.sector, len(p))
		m, serr := d.f.ReadAt(p[done:end], d.off+int64(done))
		if serr != nil && !(errors.Is(serr, io.EOF) && m == end-done) {
			pos := d.off + int64(done)
			lba := pos / int64(d.sector)
			if !d.skipBad {
				if done > 0 {
					d.off += int64(done)
					return done, fmt.Errorf("read error on source at LBA %d (byte %d): %w", lba, pos, serr)
				}
				return 0, fmt.Errorf("read error on source at LBA %d (byte %d): %w", lba, pos, serr)
			}
			clear(p[done:end])
			d.addBad(pos, int64(end-done))
			d.log("read error at LBA %d (byte %d), filled with zeros: %v", lba, pos, serr)
		}
		done = end
	}
	d.off += int64(len(p))
	return len(p), nil
}

func (d *devReader) addBad(start, length int64) {
	if k := len(d.bad); k > 0 && d.bad[k-1].Start+d.bad[k-1].Length == start {
		d.bad[k-1].Length += length
		return
	}
	d.bad = append(d.bad, Range{start, length})
}

// Magic numbers of the supported compression formats.
var magics = []struct {
	name  string
	magic []byte
}{
	{"gzip", []byte{0x1f, 0x8b}},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
}

// detectCompression looks at the first bytes of a stream.
func detectCompression(head []byte) string {
	for _, m := range magics {
		if len(head) >= len(m.magic) && string(head[:len(m.magic)]) == string(m.magic) {
			return m.name
		}
	}
	// A zstd skippable frame (metadata, such as a seek table) first.
	if len(head) >= 4 && head[0]&0xf0 == 0x50 && string(head[1:4]) == "\x2a\x4d\x18" {
		return "zstd"
	}
	return "none"
}

// stream returns the uncompressed image stream of src, the compression's
// name and a closer. A block device is read as it is; so is a plain image
// file, through src itself, so that its holes are skipped.
func (s *source) stream() (io.Reader, string, func() error, error) {
	if s.isBlock || (s.dev != nil && peekCompression(s.file) == "none") {
		return s, "none", func() error { return nil }, nil
	}
	return decompress(s)
}

// peekCompression detects the compression of a file from its first bytes
// without moving its read position ("" when they cannot be read).
func peekCompression(f *os.File) string {
	head := make([]byte, 8)
	n, err := f.ReadAt(head, 0)
	if n == 0 && err != nil {
		return ""
	}
	return detectCompression(head[:n])
}

// decompress wraps r in a decompressor chosen by its magic bytes. It returns
// the reader of the uncompressed stream, the compression's name and a closer.
func decompress(r io.Reader) (io.Reader, string, func() error, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(18) // a zstd frame header is at most 18 bytes
	if len(head) >= 6 {
		err = nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", nil, fmt.Errorf("reading the start of the image: %w", err)
	}
	kind := detectCompression(head)
	nop := func() error { return nil }
	switch kind {
	case "gzip":
		zr, err := pgzip.NewReaderN(br, 1<<20, 4)
		if err != nil {
			return nil, "", nil, fmt.Errorf("gzip image: %w", err)
		}
		return &wrapErr{zr, "gzip"}, kind, zr.Close, nil
	case "zstd":
		zr, err := newZstdStream(br)
		if err != nil {
			return nil, "", nil, fmt.Errorf("zstd image: %w", err)
		}
		return &zstdErr{wrapErr{zr, "zstd"}, head}, kind, zr.Close, nil
	case "xz":
		// xi2's port of XZ Embedded (therootcompany/xz): ten times the
		// speed of ulikunitz/xz on disk images; every check type, several
		// streams, the index verified; dictionaries up to 64 MiB (xz -9).
		zr, err := xz.NewReader(br, 0)
		if err != nil {
			return nil, "", nil, fmt.Errorf("xz image: %w", err)
		}
		return &wrapErr{zr, "xz"}, kind, nop, nil
	}
	return br, kind, nop, nil
}

// wrapErr names the decompressor in errors and turns a bare EOF inside a
// frame into a clear "truncated or corrupt" message.
type wrapErr struct {
	r    io.Reader
	kind string
}

func (w *wrapErr) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s image truncated or corrupt: %w", w.kind, err)
	}
	return n, err
}

// maxZstdWindow bounds the memory a zstd decoder may hold for its window:
// zstd --long=29 (512 MiB) images decode; a larger window (--long=30, 31)
// is refused by name rather than reported as corruption. The rescue
// system runs from RAM, so the cap stays well below what zstd allows.
const maxZstdWindow = 512 << 20

// zstdErr explains a window-size error with the frame's window.
type zstdErr struct {
	wrapErr
	head []byte
}

// skipHole passes the holes of the zstd stream on (holeSkipper).
func (z *zstdErr) skipHole(max int64) int64 {
	if hs, ok := z.r.(holeSkipper); ok {
		return hs.skipHole(max)
	}
	return 0
}

func (z *zstdErr) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	if err != nil && err != io.EOF {
		if errors.Is(err, zstd.ErrWindowSizeExceeded) {
			var h zstd.Header
			win := "more"
			if h.Decode(z.head) == nil && h.WindowSize > 0 {
				win = gpt.HumanBytes(int64(h.WindowSize))
			}
			long := 0
			for w := h.WindowSize; w > 1; w >>= 1 {
				long++
			}
			return n, fmt.Errorf("zstd image: a window of %s exceeds the %s limit of imgcopy; recompress without --long=%d (or with --long=29 or less): %w",
				win, gpt.HumanBytes(maxZstdWindow), max(long, 30), err)
		}
		err = fmt.Errorf("%s image truncated or corrupt: %w", z.kind, err)
	}
	return n, err
}
