package imaging

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/esxi-rescue/rescue/internal/zeros"
)

// A disk image is mostly zeros, and zstd stores a run of zeros as RLE
// blocks (128 KiB each). klauspost/compress fills those byte by byte and
// hashes them, which made it 3x slower than zstd -d on an ESXi image. So
// the zstd stream is decoded here like this:
//
//   - zstdRewriter reads the frames and block headers (RFC 8878) of the
//     image and hands the decoder the same stream, except that of a run of
//     zero RLE blocks longer than the frame's window it passes on only the
//     last blocks covering a window (plus a block): the decoder's history
//     then holds the same window of zeros as it would have, RLE blocks change
//     no other decoder state (repeat offsets, entropy tables), and no match
//     reaches further back than a window. The dropped zeros become a hole.
//     A rewritten frame's header loses its content size and checksum flag;
//     both are checked here instead (xxhash64 of everything, holes included).
//   - the decoder runs synchronously (concurrency 1) through WriteTo, so it
//     asks for the next block's bytes only after it wrote the previous
//     block's output: what the rewriter sends at that moment (a hole, the
//     end of a frame) lands at the right place of the output.
//   - zstdStream hands that out as an io.Reader and a holeSkipper: holes go
//     through the pipeline as zero runs (never in memory, never compared).
//
// Frames with a dictionary or a single segment (small ones) pass unchanged.

// zstdMaxBlock is the largest block of a zstd frame (Block_Maximum_Size).
const zstdMaxBlock = 128 << 10

// zstdSegKind says what a segment of the decoded stream is.
type zstdSegKind int

const (
	segData       zstdSegKind = iota // bytes from the decoder (valid until acknowledged)
	segHole                          // n zero bytes
	segFrameStart                    // a rewritten frame starts: hash and count from here
	segFrameEnd                      // a rewritten frame ended: check its size and checksum
	segZeros                         // the next n bytes of data are known zeros: pass them as a hole
)

type zstdSeg struct {
	kind   zstdSegKind
	data   []byte
	n      int64  // hole length; frame content size for segFrameEnd (-1: none)
	sum    uint32 // checksum for segFrameEnd
	hasSum bool
	frame  int64 // input offset of the frame, for messages
}

// errZstdClosed stops the decoder when the stream is closed early.
var errZstdClosed = errors.New("zstd stream closed")

// zstdStream is the decoded stream of a zstd image.
type zstdStream struct {
	ch    chan zstdSeg
	ack   chan struct{}
	quit  chan struct{}
	once  sync.Once
	dec   *zstd.Decoder
	final error // the decoder goroutine's result, read after ch is closed

	data    []byte // rest of the current data segment
	hole    int64  // rest of the current hole
	known   int64  // bytes of data still to come that are known zeros
	err     error  // sticky: io.EOF or the first error
	hashing bool   // inside a rewritten frame
	h       *xxhash.Digest
	count   int64 // bytes of the current rewritten frame
}

// newZstdStream decodes the zstd stream r (see above).
func newZstdStream(r io.Reader) (*zstdStream, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false),
		zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		return nil, err
	}
	z := &zstdStream{ch: make(chan zstdSeg, 4), ack: make(chan struct{}, 1), quit: make(chan struct{}), dec: dec, h: xxhash.New()}
	rw := &zstdRewriter{in: bufio.NewReaderSize(r, 1<<20), z: z}
	if err := dec.Reset(rw); err != nil {
		dec.Close()
		return nil, err
	}
	go func() {
		defer dec.Close()
		defer close(z.ch)
		_, err := dec.WriteTo(zstdWriter{z})
		if rw.err != nil && rw.err != io.EOF && !errors.Is(err, errZstdClosed) {
			err = rw.err // the rewriter's own finding, not how the decoder passed it on
		}
		z.final = err
	}()
	return z, nil
}

// send hands s to the reader; false when the stream was closed.
func (z *zstdStream) send(s zstdSeg) bool {
	select {
	case z.ch <- s:
		return true
	case <-z.quit:
		return false
	}
}

// zstdWriter takes the decoder's output: each block waits until it is read.
type zstdWriter struct{ z *zstdStream }

func (w zstdWriter) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if !w.z.send(zstdSeg{kind: segData, data: b}) {
		return 0, errZstdClosed
	}
	select {
	case <-w.z.ack:
		return len(b), nil
	case <-w.z.quit:
		return 0, errZstdClosed
	}
}

// next takes the next segment; it sets z.err at the end of the stream.
func (z *zstdStream) next() {
	s, ok := <-z.ch
	if !ok {
		z.err = z.final
		if z.err == nil {
			z.err = io.EOF
		}
		return
	}
	switch s.kind {
	case segData:
		z.data = s.data
		if k := min(z.known, int64(len(s.data))); k > 0 {
			// Zeros the rewriter fed the decoder for its history: a hole.
			z.known -= k
			z.hole += k
			z.data = z.data[k:]
			if len(z.data) == 0 {
				z.ack <- struct{}{}
			}
		}
	case segZeros:
		z.known += s.n
	case segHole:
		z.hole = s.n
	case segFrameStart:
		z.hashing, z.count = true, 0
		z.h.Reset()
	case segFrameEnd:
		z.hashing = false
		if s.n >= 0 && z.count != s.n {
			z.err = fmt.Errorf("the zstd frame at byte %d holds %d bytes, its header says %d: %w", s.frame, z.count, s.n, zstd.ErrFrameSizeMismatch)
		} else if got := uint32(z.h.Sum64()); s.hasSum && got != s.sum {
			z.err = fmt.Errorf("the zstd frame at byte %d: checksum %08x, its trailer says %08x: %w", s.frame, got, s.sum, zstd.ErrCRCMismatch)
		}
	}
}

func (z *zstdStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		switch {
		case z.hole > 0:
			n := int(min(int64(len(p)), z.hole))
			clear(p[:n])
			if z.hashing {
				z.h.Write(p[:n])
				z.count += int64(n)
			}
			z.hole -= int64(n)
			return n, nil
		case len(z.data) > 0:
			n := copy(p, z.data)
			if z.hashing {
				z.h.Write(p[:n])
				z.count += int64(n)
			}
			z.data = z.data[n:]
			if len(z.data) == 0 {
				z.ack <- struct{}{}
			}
			return n, nil
		case z.err != nil:
			return 0, z.err
		}
		z.next()
	}
}

// skipHole implements holeSkipper: the zeros of a collapsed run pass
// without being filled or compared.
func (z *zstdStream) skipHole(max int64) int64 {
	for len(z.data) == 0 && z.hole == 0 && z.err == nil {
		z.next()
	}
	if z.hole == 0 || max <= 0 {
		return 0
	}
	n := min(max, z.hole)
	if z.hashing {
		xxhZeros(z.h, n)
		z.count += n
	}
	z.hole -= n
	return n
}

// Close stops the decoder. It does not wait: the decoder may be blocked
// reading the source, which its owner closes next; the decoder's goroutine
// then ends and releases the decoder.
func (z *zstdStream) Close() error {
	z.once.Do(func() { close(z.quit) })
	return nil
}

// zstdRewriter is the decoder's input: the image's zstd stream with long
// runs of zero RLE blocks shortened (see the top of this file). It runs in
// the decoder's goroutine.
type zstdRewriter struct {
	in     *bufio.Reader
	z      *zstdStream
	off    int64       // bytes read from in
	pieces []zstdPiece // input for the decoder not yet read, in order
	hdrs   []byte      // backing of the pieces' block headers
	blk    []byte      // backing of the piece holding a whole block
	err    error

	inFrame    bool
	rewrite    bool  // the current frame is rewritten
	keep       int64 // zeros of a run kept for the decoder's history
	maxBlock   int64
	frameOff   int64
	fcs        int64 // frame content size, -1 when not given
	hasSum     bool
	endPending bool // a rewritten frame ended: tell the reader at the next request
	sum        uint32

	run     []uint32 // headers of the zero RLE blocks held back
	runSum  int64    // bytes they decode to
	runHole int64    // zeros dropped from the run so far
}

// zstdPiece is bytes for the decoder, or a number of zero bytes.
type zstdPiece struct {
	b     []byte
	zeros int64
}

func (r *zstdRewriter) Read(p []byte) (int, error) {
	for len(r.pieces) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.hdrs, r.blk = r.hdrs[:0], r.blk[:0]
		r.err = r.fill()
	}
	pc := &r.pieces[0]
	var n int
	if len(pc.b) > 0 {
		n = copy(p, pc.b)
		pc.b = pc.b[n:]
	} else {
		n = int(min(int64(len(p)), pc.zeros))
		clear(p[:n])
		pc.zeros -= int64(n)
	}
	if len(pc.b) == 0 && pc.zeros == 0 {
		r.pieces = r.pieces[1:]
	}
	return n, nil
}

// read reads exactly len(p) bytes of the image; an end of the image inside
// a frame is io.ErrUnexpectedEOF.
func (r *zstdRewriter) read(p []byte) error {
	n, err := io.ReadFull(r.in, p)
	r.off += int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// fill queues the next pieces of the decoder's input. It is called only
// when the decoder read everything before, so all its output up to here
// was written.
func (r *zstdRewriter) fill() error {
	r.pieces = r.pieces[:0]
	if r.endPending {
		r.endPending = false
		if !r.z.send(zstdSeg{kind: segFrameEnd, n: r.fcs, sum: r.sum, hasSum: r.hasSum, frame: r.frameOff}) {
			return errZstdClosed
		}
	}
	if !r.inFrame {
		return r.frameHeader()
	}
	return r.block()
}

// queue adds bytes for the decoder (b must stay valid until read).
func (r *zstdRewriter) queue(b []byte) { r.pieces = append(r.pieces, zstdPiece{b: b}) }

// frameHeader reads a frame header (skipping skippable frames).
func (r *zstdRewriter) frameHeader() error {
	var m [4]byte
	for {
		start := r.off
		n, err := io.ReadFull(r.in, m[:])
		r.off += int64(n)
		if n == 0 && err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("zstd frame at byte %d: %w", start, io.ErrUnexpectedEOF)
		}
		magic := binary.LittleEndian.Uint32(m[:])
		if magic&^0xf == 0x184D2A50 { // a skippable frame
			var sz [4]byte
			if err := r.read(sz[:]); err != nil {
				return err
			}
			k := int64(binary.LittleEndian.Uint32(sz[:]))
			d, err := r.in.Discard(int(k))
			r.off += int64(d)
			if err != nil {
				return fmt.Errorf("skippable frame at byte %d: %w", start, io.ErrUnexpectedEOF)
			}
			continue
		}
		if magic != 0xFD2FB528 {
			return fmt.Errorf("not a zstd frame at byte %d (magic %08x): %w", start, magic, zstd.ErrMagicMismatch)
		}
		r.frameOff = start
		break
	}
	var fhd [1]byte
	if err := r.read(fhd[:]); err != nil {
		return err
	}
	d := fhd[0]
	single := d&0x20 != 0
	fcsSize := [4]int{0, 2, 4, 8}[d>>6]
	if single && d>>6 == 0 {
		fcsSize = 1
	}
	didSize := [4]int{0, 1, 2, 4}[d&3]
	rest := make([]byte, 0, 14)
	if !single {
		rest = append(rest, 0)
	}
	rest = rest[:len(rest)+didSize+fcsSize]
	if err := r.read(rest); err != nil {
		return err
	}
	r.inFrame, r.hasSum = true, d&4 != 0
	r.rewrite = !single && didSize == 0 && d&0x08 == 0
	if !r.rewrite {
		r.queue(append(append(m[:], d), rest...))
		return nil
	}
	wd := rest[0]
	wlog := 10 + uint(wd>>3)
	window := int64(1)<<wlog + (int64(1)<<wlog)/8*int64(wd&7)
	r.maxBlock = min(window, zstdMaxBlock)
	r.keep = window + r.maxBlock
	r.fcs = -1
	switch f := rest[1:]; fcsSize {
	case 2:
		r.fcs = int64(binary.LittleEndian.Uint16(f)) + 256
	case 4:
		r.fcs = int64(binary.LittleEndian.Uint32(f))
	case 8:
		r.fcs = int64(binary.LittleEndian.Uint64(f))
	}
	// The same frame without content size and checksum: both are checked
	// by zstdStream over the whole output, holes included.
	r.queue(append(m[:], d&^0xC4, wd))
	if !r.z.send(zstdSeg{kind: segFrameStart}) {
		return errZstdClosed
	}
	return nil
}

// block reads the next block (or, in a rewritten frame, a whole run of
// zero RLE blocks and the block after it).
func (r *zstdRewriter) block() error {
	for {
		var h [3]byte
		if err := r.read(h[:]); err != nil {
			return err
		}
		hdr := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
		last, typ, size := hdr&1 != 0, (hdr>>1)&3, int64(hdr>>3)
		if typ == 3 {
			return fmt.Errorf("zstd block at byte %d has the reserved type: %w", r.off-3, zstd.ErrReservedBlockType)
		}
		if r.rewrite && size > r.maxBlock {
			return fmt.Errorf("zstd block at byte %d is %d bytes, more than the frame's %d: %w", r.off-3, size, r.maxBlock, zstd.ErrCompressedSizeTooBig)
		}
		n := size
		if typ == 1 {
			n = 1
		}
		var c byte
		if r.rewrite && typ == 1 {
			var err error
			c, err = r.in.ReadByte()
			if err != nil {
				return io.ErrUnexpectedEOF
			}
			r.off++
			if c == 0 {
				r.addZeros(hdr, size)
				if !last {
					continue
				}
				if err := r.flushRun(); err != nil {
					return err
				}
				return r.frameEnd()
			}
		}
		if err := r.flushRun(); err != nil {
			return err
		}
		r.blk = append(r.blk, h[:]...)
		if r.rewrite && typ == 1 {
			r.blk = append(r.blk, c) // read above, not zero
		} else {
			k := len(r.blk)
			r.blk = append(r.blk, make([]byte, n)...)
			if err := r.read(r.blk[k:]); err != nil {
				return err
			}
		}
		r.queue(r.blk)
		if last {
			return r.frameEnd()
		}
		return nil
	}
}

// addZeros adds a zero RLE block to the run held back; blocks no longer
// needed for a window of zeros become the run's hole.
func (r *zstdRewriter) addZeros(hdr uint32, size int64) {
	r.run = append(r.run, hdr)
	r.runSum += size
	drop := 0
	for drop < len(r.run) {
		first := int64(r.run[drop] >> 3)
		if r.runSum-first < r.keep {
			break
		}
		r.runSum -= first
		r.runHole += first
		drop++
	}
	if drop > 0 {
		r.run = append(r.run[:0], r.run[drop:]...)
	}
}

// flushRun sends the hole of a run of zeros, then queues the blocks held
// back, as raw blocks of zeros: the decoder copies them into its history,
// which is much faster than its RLE fill, and the reader passes their
// output on as a hole too.
func (r *zstdRewriter) flushRun() error {
	if r.runHole > 0 {
		if !r.z.send(zstdSeg{kind: segHole, n: r.runHole}) {
			return errZstdClosed
		}
		r.runHole = 0
	}
	if len(r.run) == 0 {
		return nil
	}
	if !r.z.send(zstdSeg{kind: segZeros, n: r.runSum}) {
		return errZstdClosed
	}
	for _, hdr := range r.run {
		raw := hdr &^ 6 // Block_Type 0: raw
		k := len(r.hdrs)
		r.hdrs = append(r.hdrs, byte(raw), byte(raw>>8), byte(raw>>16))
		r.queue(r.hdrs[k : k+3 : k+3])
		r.pieces = append(r.pieces, zstdPiece{zeros: int64(hdr >> 3)})
	}
	r.run, r.runSum = r.run[:0], 0
	return nil
}

// frameEnd reads the frame's checksum after its last block.
func (r *zstdRewriter) frameEnd() error {
	r.inFrame = false
	if !r.hasSum {
		r.endPending = r.rewrite
		return nil
	}
	var s [4]byte
	if err := r.read(s[:]); err != nil {
		return err
	}
	if r.rewrite {
		r.sum, r.endPending = binary.LittleEndian.Uint32(s[:]), true
	} else {
		r.queue(append([]byte(nil), s[:]...))
	}
	return nil
}

// xxhZeros adds n zero bytes to d, three times faster than hashing them:
// for a zero stripe xxhash64's round is rotl(v, 31) * prime1 on each lane,
// so only the four lanes are advanced (through the digest's documented
// binary state). The zeros of a disk image are most of its stream.
func xxhZeros(d *xxhash.Digest, n int64) {
	const prime1 = 11400714785074694791
	var zero [32]byte
	st, err := d.MarshalBinary()
	if err != nil || len(st) != 4+8*5+32 {
		zeros.Write(d, n)
		return
	}
	if part := int64(binary.LittleEndian.Uint64(st[36:]) % 32); part != 0 {
		k := min(32-part, n)
		d.Write(zero[:k])
		n -= k
		if st, err = d.MarshalBinary(); err != nil {
			zeros.Write(d, n)
			return
		}
	}
	stripes := n / 32
	v1, v2 := binary.LittleEndian.Uint64(st[4:]), binary.LittleEndian.Uint64(st[12:])
	v3, v4 := binary.LittleEndian.Uint64(st[20:]), binary.LittleEndian.Uint64(st[28:])
	for range stripes {
		v1 = bits.RotateLeft64(v1, 31) * prime1
		v2 = bits.RotateLeft64(v2, 31) * prime1
		v3 = bits.RotateLeft64(v3, 31) * prime1
		v4 = bits.RotateLeft64(v4, 31) * prime1
	}
	binary.LittleEndian.PutUint64(st[4:], v1)
	binary.LittleEndian.PutUint64(st[12:], v2)
	binary.LittleEndian.PutUint64(st[20:], v3)
	binary.LittleEndian.PutUint64(st[28:], v4)
	binary.LittleEndian.PutUint64(st[36:], binary.LittleEndian.Uint64(st[36:])+uint64(stripes*32))
	if d.UnmarshalBinary(st) != nil {
		panic("xxhash: state rejected")
	}
	d.Write(zero[:n%32])
}
