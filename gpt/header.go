package gpt

import (
	"encoding/binary"
	"hash/crc32"
)

// Signature is the 8-byte GPT header signature.
const Signature = "EFI PART"

// Revision10 is the only header revision in use (UEFI 2.x: 1.0).
const Revision10 = 0x00010000

// MinHeaderSize is the size of the defined header fields (92 bytes).
const MinHeaderSize = 92

// Header is a GPT header, every field at its offset (see the UEFI spec).
type Header struct {
	Signature      [8]byte // 0x00
	Revision       uint32  // 0x08
	HeaderSize     uint32  // 0x0C, bytes covered by HeaderCRC
	HeaderCRC      uint32  // 0x10
	Reserved       uint32  // 0x14
	MyLBA          uint64  // 0x18
	AlternateLBA   uint64  // 0x20
	FirstUsableLBA uint64  // 0x28
	LastUsableLBA  uint64  // 0x30
	DiskGUID       GUID    // 0x38
	EntryLBA       uint64  // 0x48
	NumEntries     uint32  // 0x50
	EntrySize      uint32  // 0x54
	ArrayCRC       uint32  // 0x58
}

// ParseHeader decodes the fixed fields of a header from b (at least 92 bytes).
// It does not validate anything.
func ParseHeader(b []byte) Header {
	var h Header
	copy(h.Signature[:], b[0:8])
	h.Revision = binary.LittleEndian.Uint32(b[0x08:])
	h.HeaderSize = binary.LittleEndian.Uint32(b[0x0C:])
	h.HeaderCRC = binary.LittleEndian.Uint32(b[0x10:])
	h.Reserved = binary.LittleEndian.Uint32(b[0x14:])
	h.MyLBA = binary.LittleEndian.Uint64(b[0x18:])
	h.AlternateLBA = binary.LittleEndian.Uint64(b[0x20:])
	h.FirstUsableLBA = binary.LittleEndian.Uint64(b[0x28:])
	h.LastUsableLBA = binary.LittleEndian.Uint64(b[0x30:])
	copy(h.DiskGUID[:], b[0x38:0x48])
	h.EntryLBA = binary.LittleEndian.Uint64(b[0x48:])
	h.NumEntries = binary.LittleEndian.Uint32(b[0x50:])
	h.EntrySize = binary.LittleEndian.Uint32(b[0x54:])
	h.ArrayCRC = binary.LittleEndian.Uint32(b[0x58:])
	return h
}

// Put encodes the fixed fields into b (at least 92 bytes), leaving every
// byte after offset 0x5C as it was.
func (h Header) Put(b []byte) {
	copy(b[0:8], h.Signature[:])
	binary.LittleEndian.PutUint32(b[0x08:], h.Revision)
	binary.LittleEndian.PutUint32(b[0x0C:], h.HeaderSize)
	binary.LittleEndian.PutUint32(b[0x10:], h.HeaderCRC)
	binary.LittleEndian.PutUint32(b[0x14:], h.Reserved)
	binary.LittleEndian.PutUint64(b[0x18:], h.MyLBA)
	binary.LittleEndian.PutUint64(b[0x20:], h.AlternateLBA)
	binary.LittleEndian.PutUint64(b[0x28:], h.FirstUsableLBA)
	binary.LittleEndian.PutUint64(b[0x30:], h.LastUsableLBA)
	copy(b[0x38:0x48], h.DiskGUID[:])
	binary.LittleEndian.PutUint64(b[0x48:], h.EntryLBA)
	binary.LittleEndian.PutUint32(b[0x50:], h.NumEntries)
	binary.LittleEndian.PutUint32(b[0x54:], h.EntrySize)
	binary.LittleEndian.PutUint32(b[0x58:], h.ArrayCRC)
}

// HeaderCRCOf computes the header CRC32 of a raw header sector: over
// HeaderSize bytes (read from the sector) with the CRC field taken as zero.
// ok is false when HeaderSize is out of range for the sector.
func HeaderCRCOf(sector []byte) (crc uint32, ok bool) {
	size := binary.LittleEndian.Uint32(sector[0x0C:])
	if size < MinHeaderSize || int64(size) > int64(len(sector)) {
		return 0, false
	}
	b := make([]byte, size)
	copy(b, sector[:size])
	b[0x10], b[0x11], b[0x12], b[0x13] = 0, 0, 0, 0
	return crc32.ChecksumIEEE(b), true
}
