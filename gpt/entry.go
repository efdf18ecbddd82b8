package gpt

import (
	"encoding/binary"
	"unicode/utf16"
)

// EntryNameBytes is the size of the UTF-16LE name field of an entry.
const EntryNameBytes = 72

// Entry is the decoded view of a partition entry's first 128 bytes.
type Entry struct {
	Type   GUID
	Unique GUID
	First  uint64 // first LBA
	Last   uint64 // last LBA, inclusive
	Attrs  uint64
	Name   string // up to the first NUL
}

// ParseEntry decodes an entry from raw (at least 128 bytes).
func ParseEntry(raw []byte) Entry {
	var e Entry
	copy(e.Type[:], raw[0:16])
	copy(e.Unique[:], raw[16:32])
	e.First = binary.LittleEndian.Uint64(raw[32:])
	e.Last = binary.LittleEndian.Uint64(raw[40:])
	e.Attrs = binary.LittleEndian.Uint64(raw[48:])
	u := make([]uint16, 0, EntryNameBytes/2)
	for i := 56; i+1 < 56+EntryNameBytes; i += 2 {
		c := binary.LittleEndian.Uint16(raw[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	e.Name = string(utf16.Decode(u))
	return e
}

// Slot is one slot of the entry array, kept byte for byte. Index is the
// 1-based entry number (the N in /dev/sdaN); Raw is the whole entry
// (SizeOfPartitionEntry bytes), including any bytes after the name's NUL.
type Slot struct {
	Index int
	Raw   []byte
}

// Used reports whether the slot holds a partition (non-zero type GUID).
func (s Slot) Used() bool { return !GUID(s.Raw[0:16]).IsZero() }

// Entry decodes the slot.
func (s Slot) Entry() Entry { return ParseEntry(s.Raw) }

// Sectors returns the partition length in LBAs (0 for an unused or inverted entry).
func (e Entry) Sectors() uint64 {
	if e.Last < e.First {
		return 0
	}
	return e.Last - e.First + 1
}
