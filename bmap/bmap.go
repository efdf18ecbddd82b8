// Package bmap reads and writes block maps in bmaptool's format (versions 1.2
// to 2.x) plus imgcopy's whole-image SHA-256.
//
// A block map lists the blocks of an image that hold data, each range with a
// checksum. A restore reads only the mapped ranges and verifies each range's
// checksum, like `bmaptool copy`. The extension element ImageSHA256 records
// the SHA-256 of the whole image: when every mapped range matches its checksum
// and every unmapped byte is zero (see Checker), the image is the one whose
// SHA-256 the map records, so it can be reported without hashing the zeros.
//
// The format is defined by bmap-tools (BmapCreate.py and BmapCopy.py).
package bmap

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
)

// Map describes which blocks of an image hold data.
type Map struct {
	Version      string  // format version as written ("2.0")
	ImageSize    int64   // bytes
	BlockSize    int64   // bytes; a power of two from 512 to 64 MiB
	BlocksCount  int64   // ceil(ImageSize/BlockSize)
	ChecksumType string  // "sha256", "sha1", "sha512", "md5", or "" when ranges carry no checksums
	Ranges       []Range // sorted, non-overlapping, within BlocksCount
	ImageSHA256  []byte  // SHA-256 of the whole image (imgcopy's extension element), nil when absent
}

// Range is blocks First..Last inclusive and their checksum (nil when absent).
type Range struct {
	First, Last int64
	Checksum    []byte
}

// Limits on the numbers a map may hold; larger values are rejected as absurd.
const (
	minBlockSize = 512
	maxBlockSize = 64 << 20
	maxImageSize = 1 << 60 // 1 EiB
	maxFileSize  = 64 << 20
)

// MappedBlocks returns the number of blocks in all ranges.
func (m *Map) MappedBlocks() int64 {
	var n int64
	for _, r := range m.Ranges {
		n += r.Last - r.First + 1
	}
	return n
}

// MappedBytes returns the bytes of the mapped blocks, the last block of the
// image counted only up to ImageSize.
func (m *Map) MappedBytes() int64 {
	var n int64
	for _, r := range m.Ranges {
		off, end := m.ByteRange(r)
		n += end - off
	}
	return n
}

// ByteRange returns the bytes [off,end) of r in the image, end clipped to
// ImageSize.
func (m *Map) ByteRange(r Range) (off, end int64) {
	off = r.First * m.BlockSize
	end = (r.Last + 1) * m.BlockSize
	if end > m.ImageSize {
		end = m.ImageSize
	}
	if off > end {
		off = end
	}
	return off, end
}

// Complete reports whether every range has a checksum and the map records the
// image's SHA-256, so that a Checker that accepts an image proves the image's
// SHA-256. Range checksums of md5 or sha1, whose collisions can be forged, do
// not count: Complete also requires ChecksumType sha256 or sha512.
func (m *Map) Complete() bool {
	if m.ChecksumType != "sha256" && m.ChecksumType != "sha512" || m.ImageSHA256 == nil {
		return false
	}
	for _, r := range m.Ranges {
		if r.Checksum == nil {
			return false
		}
	}
	return true
}

// NewHash returns a new hash of ChecksumType, nil if ChecksumType is "" or
// unknown.
func (m *Map) NewHash() hash.Hash {
	return newHash(m.ChecksumType)
}

func newHash(typ string) hash.Hash {
	switch typ {
	case "sha256":
		return sha256.New()
	case "sha1":
		return sha1.New()
	case "sha512":
		return sha512.New()
	case "md5":
		return md5.New()
	}
	return nil
}

// hashSize returns the digest size in bytes of a checksum type, 0 if unknown.
func hashSize(typ string) int {
	switch typ {
	case "sha256":
		return sha256.Size
	case "sha1":
		return sha1.Size
	case "sha512":
		return sha512.Size
	case "md5":
		return md5.Size
	}
	return 0
}

// validate checks the invariants documented on Map (everything but Version).
func (m *Map) validate() error {
	if m.ImageSize <= 0 || m.ImageSize > maxImageSize {
		return fmt.Errorf("image size %d bytes is out of range (1 to %d)", m.ImageSize, int64(maxImageSize))
	}
	if m.BlockSize < minBlockSize || m.BlockSize > maxBlockSize || m.BlockSize&(m.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d is not a power of two from %d to %d", m.BlockSize, minBlockSize, maxBlockSize)
	}
	if want := (m.ImageSize + m.BlockSize - 1) / m.BlockSize; m.BlocksCount != want {
		return fmt.Errorf("blocks count %d does not match image size %d and block size %d (want %d)",
			m.BlocksCount, m.ImageSize, m.BlockSize, want)
	}
	size := 0
	if m.ChecksumType != "" {
		size = hashSize(m.ChecksumType)
		if size == 0 {
			return fmt.Errorf("unsupported checksum type %q (want sha256, sha1, sha512 or md5)", m.ChecksumType)
		}
	}
	if m.ImageSHA256 != nil && len(m.ImageSHA256) != sha256.Size {
		return fmt.Errorf("image SHA-256 is %d bytes, want %d", len(m.ImageSHA256), sha256.Size)
	}
	if int64(len(m.Ranges)) > m.BlocksCount {
		return fmt.Errorf("%d ranges for %d blocks", len(m.Ranges), m.BlocksCount)
	}
	prev := int64(-1)
	for i, r := range m.Ranges {
		switch {
		case r.First < 0 || r.Last < 0:
			return fmt.Errorf("range %d (%d-%d): negative block number", i+1, r.First, r.Last)
		case r.First > r.Last:
			return fmt.Errorf("range %d (%d-%d): first block after last block", i+1, r.First, r.Last)
		case r.Last >= m.BlocksCount:
			return fmt.Errorf("range %d (%d-%d): beyond the last block %d", i+1, r.First, r.Last, m.BlocksCount-1)
		case r.First <= prev:
			return fmt.Errorf("range %d (%d-%d): not after the previous range's last block %d (ranges must be sorted and not overlap)",
				i+1, r.First, r.Last, prev)
		}
		prev = r.Last
		if r.Checksum == nil {
			continue
		}
		if size == 0 {
			return fmt.Errorf("range %d (%d-%d) has a checksum but the map has no checksum type", i+1, r.First, r.Last)
		}
		if len(r.Checksum) != size {
			return fmt.Errorf("range %d (%d-%d): %s checksum is %d bytes, want %d", i+1, r.First, r.Last, m.ChecksumType, len(r.Checksum), size)
		}
	}
	return nil
}

// MismatchError says where the image and its map disagree. First and Last
// are the blocks of the range whose checksum differs, or -1 when the
// mismatch is about bytes outside the ranges.
type MismatchError struct {
	Off, End    int64 // bytes [Off,End) of the image
	First, Last int64 // blocks of the range, or -1
	Reason      string
}

// Error describes the mismatch, byte ranges inclusive like the blocks:
// "blocks F-L (bytes O-E): checksum differs" or
// "byte O: non-zero data outside the mapped ranges".
func (e *MismatchError) Error() string {
	switch {
	case e.First >= 0:
		return fmt.Sprintf("blocks %d-%d (bytes %d-%d): %s", e.First, e.Last, e.Off, e.End-1, e.Reason)
	case e.End == e.Off+1:
		return fmt.Sprintf("byte %d: %s", e.Off, e.Reason)
	default:
		return fmt.Sprintf("bytes %d-%d: %s", e.Off, e.End-1, e.Reason)
	}
}

// errDone is returned when a Builder or Checker is used after Finish.
var errDone = errors.New("already finished")
