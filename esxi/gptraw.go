package esxi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// This file reads and writes GPT bytes directly (UEFI spec offsets), on
// purpose without the project's gpt package or go-diskfs: Damage and
// Inspect must not share a bug with the code they test or imitate.

// rawCopy is one GPT header with its entry array, as bytes.
type rawCopy struct {
	LBA   uint64 // where the header was read
	Hdr   []byte // the whole header sector
	Array []byte // NumberOfPartitionEntries * SizeOfPartitionEntry bytes
}

const gptSignature = "EFI PART"

// maxArrayBytes bounds the entry array we are willing to read.
const maxArrayBytes = 4 << 20

func (c *rawCopy) u32(off int) uint32 { return binary.LittleEndian.Uint32(c.Hdr[off:]) }
func (c *rawCopy) u64(off int) uint64 { return binary.LittleEndian.Uint64(c.Hdr[off:]) }
func (c *rawCopy) set32(off int, v uint32) {
	binary.LittleEndian.PutUint32(c.Hdr[off:], v)
}
func (c *rawCopy) set64(off int, v uint64) {
	binary.LittleEndian.PutUint64(c.Hdr[off:], v)
}

func (c *rawCopy) headerSize() uint32 { return c.u32(0x0C) }
func (c *rawCopy) myLBA() uint64      { return c.u64(0x18) }
func (c *rawCopy) altLBA() uint64     { return c.u64(0x20) }
func (c *rawCopy) lastUsable() uint64 { return c.u64(0x30) }
func (c *rawCopy) entryLBA() uint64   { return c.u64(0x48) }
func (c *rawCopy) numEntries() uint32 { return c.u32(0x50) }
func (c *rawCopy) entrySize() uint32  { return c.u32(0x54) }

// headerCRC computes the header CRC32 over HeaderSize bytes with the CRC
// field zeroed.
func (c *rawCopy) headerCRC() uint32 {
	n := c.headerSize()
	if n < 92 || int(n) > len(c.Hdr) {
		return 0
	}
	h := append([]byte(nil), c.Hdr[:n]...)
	binary.LittleEndian.PutUint32(h[0x10:], 0)
	return crc32.ChecksumIEEE(h)
}

func (c *rawCopy) headerCRCOK() bool { return c.u32(0x10) == c.headerCRC() }
func (c *rawCopy) arrayCRCOK() bool  { return c.u32(0x58) == crc32.ChecksumIEEE(c.Array) }

// seal stores the array CRC and then the header CRC.
func (c *rawCopy) seal() {
	c.set32(0x58, crc32.ChecksumIEEE(c.Array))
	c.set32(0x10, 0)
	c.set32(0x10, c.headerCRC())
}

// arraySectors is how many sectors the entry array takes.
func (c *rawCopy) arraySectors() uint64 {
	ss := uint64(len(c.Hdr))
	return (uint64(len(c.Array)) + ss - 1) / ss
}

// rawEntry is one used slot of an array.
type rawEntry struct {
	Slot        int // 1-based
	Type        string
	First, Last uint64
	Raw         []byte
}

// entries returns the used slots (non-zero type GUID) in array order.
func (c *rawCopy) entries() []rawEntry {
	es := int(c.entrySize())
	var out []rawEntry
	for i := 0; es > 0 && (i+1)*es <= len(c.Array); i++ {
		raw := c.Array[i*es : (i+1)*es]
		if isZero(raw[:16]) {
			continue
		}
		out = append(out, rawEntry{
			Slot:  i + 1,
			Type:  guidString(raw[:16]),
			First: binary.LittleEndian.Uint64(raw[32:]),
			Last:  binary.LittleEndian.Uint64(raw[40:]),
			Raw:   raw,
		})
	}
	return out
}

// readRawCopy reads the GPT header at lba and its array. It checks only
// what is needed to read safely (signature, sizes); CRCs are the caller's.
func readRawCopy(r io.ReaderAt, size int64, lba uint64, ss int) (*rawCopy, error) {
	if ss != 512 && ss != 4096 {
		return nil, fmt.Errorf("sector size %d: want 512 or 4096", ss)
	}
	if int64(lba+1)*int64(ss) > size {
		return nil, fmt.Errorf("GPT header LBA %d is beyond the end of the disk", lba)
	}
	c := &rawCopy{LBA: lba, Hdr: make([]byte, ss)}
	if _, err := r.ReadAt(c.Hdr, int64(lba)*int64(ss)); err != nil {
		return nil, fmt.Errorf("reading GPT header at LBA %d: %w", lba, err)
	}
	if string(c.Hdr[:8]) != gptSignature {
		return nil, fmt.Errorf("no GPT header at LBA %d (signature %q)", lba, c.Hdr[:8])
	}
	if hs := c.headerSize(); hs < 92 || int(hs) > ss {
		return nil, fmt.Errorf("GPT header at LBA %d: header size %d", lba, hs)
	}
	n, es := uint64(c.numEntries()), uint64(c.entrySize())
	if es < 128 || es%8 != 0 || n == 0 || n*es > maxArrayBytes {
		return nil, fmt.Errorf("GPT header at LBA %d: %d entries of %d bytes", lba, n, es)
	}
	off := int64(c.entryLBA()) * int64(ss)
	if c.entryLBA() == 0 || off+int64(n*es) > size || off < 0 {
		return nil, fmt.Errorf("GPT header at LBA %d: entry array at LBA %d lies outside the disk", lba, c.entryLBA())
	}
	c.Array = make([]byte, n*es)
	if _, err := r.ReadAt(c.Array, off); err != nil {
		return nil, fmt.Errorf("reading GPT entry array at LBA %d: %w", c.entryLBA(), err)
	}
	return c, nil
}

// writeRawCopy writes the array, then the header.
func writeRawCopy(w io.WriterAt, c *rawCopy) error {
	ss := int64(len(c.Hdr))
	if _, err := w.WriteAt(c.Array, int64(c.entryLBA())*ss); err != nil {
		return fmt.Errorf("writing GPT array at LBA %d: %w", c.entryLBA(), err)
	}
	if _, err := w.WriteAt(c.Hdr, int64(c.LBA)*ss); err != nil {
		return fmt.Errorf("writing GPT header at LBA %d: %w", c.LBA, err)
	}
	return nil
}

// clone deep-copies a rawCopy.
func (c *rawCopy) clone() *rawCopy {
	return &rawCopy{LBA: c.LBA, Hdr: append([]byte(nil), c.Hdr...), Array: append([]byte(nil), c.Array...)}
}

// detectSectorSize finds the primary GPT header at byte 512 or 4096.
func detectSectorSize(r io.ReaderAt) (int, error) {
	for _, ss := range []int{512, 4096} {
		b := make([]byte, 8)
		if _, err := r.ReadAt(b, int64(ss)); err == nil && string(b) == gptSignature {
			return ss, nil
		}
	}
	return 0, errors.New("no GPT header at LBA 1 for 512- or 4096-byte sectors (use -sector)")
}

// guidString renders on-disk mixed-endian GUID bytes in canonical form.
func guidString(b []byte) string {
	return strings.ToUpper(fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16]))
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
