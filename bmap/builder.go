package bmap

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"

	"github.com/esxi-rescue/rescue/internal/zeros"
)

// MergeGap is the size in bytes below which a run of zero blocks between two
// mapped blocks is merged into one range: fewer ranges, a few more bytes to
// copy.
const MergeGap = 1 << 20 // bytes

// Builder makes a Map from an image streamed in order, as data bytes and
// known-zero runs. A block is mapped when it holds a non-zero byte; runs of
// zero blocks shorter than MergeGap between mapped blocks are merged into the
// range (fewer ranges); range checksums are SHA-256.
//
// A Builder needs O(1) memory besides the list of ranges: it never buffers a
// block. The bytes of a block before its first non-zero byte are known to be
// zero, so they are fed into the range's hash from a shared zero buffer once
// the block turns out to be mapped.
type Builder struct {
	bs   int64
	err  error // sticky
	done bool
	pos  int64 // bytes seen

	mapped bool // the current block (pos/bs) holds a non-zero byte seen so far

	open        bool      // a range is open: first..last, hashed up to pos or the end of block last
	first, last int64     // blocks of the open range
	h           hash.Hash // SHA-256 of the open range
	ranges      []Range

	img *imageHash // with HashImage: the whole image's SHA-256
}

// imageHash is the SHA-256 of the whole image, fed lazily: the bytes from
// pos up to the Builder's pos are zeros not hashed yet (they are, before
// the next data and at the end). While shared, h is also the Builder's
// range hash: the open range (or the one to come) starts at block 0, so its
// checksum and the image's hash are the same computation up to its end,
// and a dense disk, one range from block 0, is hashed once, not twice.
type imageHash struct {
	h      hash.Hash
	pos    int64 // bytes of the image written to h
	shared bool  // h is the Builder's h, and every byte it took counts in pos
	sum    []byte
}

// maxBuilderBlockSize is the largest block size bmaptool can copy with: it
// reads in batches of 1 MiB / BlockSize blocks, which is none for larger
// blocks (bmaptool 3.6 then copies nothing and fails).
const maxBuilderBlockSize = 1 << 20

// NewBuilder returns a Builder for blocks of blockSize bytes, a power of two
// from 512 to 1 MiB, the largest block bmaptool can copy with (otherwise every
// method returns an error). 4096 is what bmaptool create uses on most file
// systems.
func NewBuilder(blockSize int64) *Builder {
	b := &Builder{bs: blockSize, h: sha256.New()}
	if blockSize < minBlockSize || blockSize > maxBuilderBlockSize || blockSize&(blockSize-1) != 0 {
		b.err = fmt.Errorf("bmap builder: block size %d is not a power of two from %d to %d", blockSize, minBlockSize, maxBuilderBlockSize)
	}
	return b
}

// HashImage makes the Builder compute the SHA-256 of the whole image (holes
// included) as well: Finish(nil) records it in the map, and ImageSHA256
// returns it. It must be called before the first byte. The image's first
// range, when it starts at block 0 (a disk's does: its partition table),
// shares its hashing with the image's: on a dense disk, one range from block
// 0, the two checksums cost one SHA-256.
func (b *Builder) HashImage() error {
	if b.pos != 0 || b.done {
		return errors.New("bmap builder: HashImage after the first byte")
	}
	b.img = &imageHash{h: b.h, shared: true}
	return nil
}

// ImageSHA256 returns the image's SHA-256 computed by the Builder (see
// HashImage), nil before Finish or without HashImage. Finish computes it
// even when it fails for an empty image.
func (b *Builder) ImageSHA256() []byte {
	if b.img == nil {
		return nil
	}
	return bytes.Clone(b.img.sum)
}

// rangeWrite and rangeZeros feed the open range's hash.
func (b *Builder) rangeWrite(p []byte) {
	b.h.Write(p)
	if b.img != nil && b.img.shared {
		b.img.pos += int64(len(p))
	}
}

func (b *Builder) rangeZeros(n int64) {
	zeros.Write(b.h, n)
	if b.img != nil && b.img.shared {
		b.img.pos += n
	}
}

// imageWrite feeds the image's own hash (not shared) with p at offset
// b.pos, after the zeros it still lags by.
func (b *Builder) imageWrite(p []byte) {
	zeros.Write(b.img.h, b.pos-b.img.pos)
	b.img.h.Write(p)
	b.img.pos = b.pos + int64(len(p))
}

// unshare gives the image its own hash: h becomes the image's, the range
// hash starts anew.
func (b *Builder) unshare() {
	b.img.shared = false
	b.h = sha256.New()
}

// advance checks that n bytes at off may be added next.
func (b *Builder) advance(off, n int64) error {
	switch {
	case b.err != nil:
		return b.err
	case b.done:
		return fmt.Errorf("bmap builder: %w", errDone)
	case off != b.pos:
		return fmt.Errorf("bmap builder: bytes at offset %d, want the next offset %d (the image must be streamed in order)", off, b.pos)
	case n < 0:
		return fmt.Errorf("bmap builder: negative length %d at offset %d", n, off)
	case n > maxImageSize-b.pos:
		b.err = fmt.Errorf("bmap builder: image larger than %d bytes", int64(maxImageSize))
		return b.err
	}
	return nil
}

// Data adds the image bytes p at offset off, which must equal the number of
// bytes seen so far. p may start and end in the middle of a block.
func (b *Builder) Data(p []byte, off int64) error {
	if err := b.advance(off, int64(len(p))); err != nil {
		return err
	}
	for len(p) > 0 {
		in := b.pos % b.bs
		seg := p[:min(int64(len(p)), b.bs-in)]
		if !b.mapped && !zeros.Is(seg) {
			b.mapBlock(b.pos/b.bs, in)
		}
		if b.mapped {
			b.rangeWrite(seg)
			if b.img != nil && !b.img.shared {
				b.imageWrite(seg)
			}
		}
		b.pos += int64(len(seg))
		p = p[len(seg):]
		if b.pos%b.bs == 0 {
			b.mapped = false
		}
	}
	return nil
}

// Zero adds n zero bytes at offset off (a hole: nothing to read), with the
// same ordering rule as Data. Zeros cost nothing unless they continue a
// mapped block.
func (b *Builder) Zero(off, n int64) error {
	if err := b.advance(off, n); err != nil {
		return err
	}
	if b.mapped && n > 0 {
		k := min(n, b.bs-b.pos%b.bs)
		b.rangeZeros(k)
		b.pos += k
		n -= k
		if b.pos%b.bs == 0 {
			b.mapped = false
		}
	}
	b.pos += n // whole zero blocks, or the zero start of a block
	return nil
}

// mapBlock marks block blk as mapped on its first non-zero byte, which is at
// byte in of the block: it extends the open range over a short gap of zero
// blocks or starts a new range, and hashes the block's leading zeros.
func (b *Builder) mapBlock(blk, in int64) {
	gap := (blk - b.last - 1) * b.bs
	if b.open && gap < MergeGap {
		b.rangeZeros(gap)
	} else {
		b.closeRange()
		if b.img != nil && b.img.shared && blk != 0 {
			b.unshare() // the first range starts later: nothing to share
		}
		b.open, b.first = true, blk
	}
	b.last = blk
	b.mapped = true
	b.rangeZeros(in)
}

func (b *Builder) closeRange() {
	if !b.open {
		return
	}
	b.ranges = append(b.ranges, Range{First: b.first, Last: b.last, Checksum: b.h.Sum(nil)})
	if b.img != nil && b.img.shared {
		b.unshare() // the image's hash goes on from the range's state
	} else {
		b.h.Reset()
	}
	b.open = false
}

// Finish returns the map of the image. ImageSize is the number of bytes seen;
// the last partial block is handled like bmaptool (its checksum covers the
// bytes that exist). imageSHA256 is recorded in the map's extension element;
// it must be nil (absent) or 32 bytes; with HashImage, nil records the
// SHA-256 the Builder computed.
func (b *Builder) Finish(imageSHA256 []byte) (*Map, error) {
	if err := b.advance(b.pos, 0); err != nil {
		return nil, err
	}
	b.done = true
	b.closeRange()
	if b.img != nil {
		if b.img.shared {
			b.unshare() // an all-zero (or empty) image: no range was opened
		}
		zeros.Write(b.img.h, b.pos-b.img.pos)
		b.img.pos = b.pos
		b.img.sum = b.img.h.Sum(nil) // also of an empty image: ImageSHA256 has it
		if imageSHA256 == nil {
			imageSHA256 = b.img.sum
		}
	}
	if b.pos == 0 {
		return nil, errors.New("bmap builder: empty image (bmaptool cannot use a map of an empty image)")
	}
	if imageSHA256 != nil && len(imageSHA256) != sha256.Size {
		return nil, fmt.Errorf("bmap builder: image SHA-256 is %d bytes, want %d", len(imageSHA256), sha256.Size)
	}
	m := &Map{
		Version:      "2.0",
		ImageSize:    b.pos,
		BlockSize:    b.bs,
		BlocksCount:  (b.pos + b.bs - 1) / b.bs,
		ChecksumType: "sha256",
		Ranges:       b.ranges,
		ImageSHA256:  bytes.Clone(imageSHA256),
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("bmap builder: internal error: %w", err)
	}
	return m, nil
}
