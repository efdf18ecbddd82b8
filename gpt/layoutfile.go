package gpt

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// LayoutFormat identifies a saved layout file.
const LayoutFormat = "esxi-rescue GPT layout 1"

// maxLayoutBytes bounds the size of a layout file LoadLayout reads: two
// arrays of MaxArrayBytes as hex plus decoded fields fit with room.
const maxLayoutBytes = 16 << 20

// layoutFile is the JSON form of a Table. Raw bytes are authoritative;
// decoded fields are written for people and checked on load.
type layoutFile struct {
	Format     string `json:"format"`
	Note       string `json:"note"`
	SectorSize int    `json:"sector_size"`
	DiskSize   int64  `json:"disk_size"`
	DiskLBAs   uint64 `json:"disk_lbas"`
	MBR        string `json:"mbr_hex"`
	// Slots is the entry array of the best copy (primary when valid);
	// SlotsFrom says which ("primary" or "backup").
	SlotsFrom string       `json:"slots_from,omitempty"`
	SlotSize  int          `json:"slot_size,omitempty"` // bytes per slot (the header's entry size)
	Slots     []layoutSlot `json:"slots,omitempty"`
	Primary   *layoutCopy  `json:"primary,omitempty"`
	Backup    *layoutCopy  `json:"backup,omitempty"`
	Stray     *layoutCopy  `json:"stray_backup,omitempty"`
	Problems  []Problem    `json:"problems,omitempty"` // informational; recomputed on load
}

type layoutHeader struct {
	Signature      string `json:"signature"`
	Revision       string `json:"revision"`
	HeaderSize     uint32 `json:"header_size"`
	HeaderCRC      string `json:"header_crc"`
	MyLBA          uint64 `json:"my_lba"`
	AlternateLBA   uint64 `json:"alternate_lba"`
	FirstUsableLBA uint64 `json:"first_usable_lba"`
	LastUsableLBA  uint64 `json:"last_usable_lba"`
	DiskGUID       string `json:"disk_guid"`
	EntryLBA       uint64 `json:"entry_lba"`
	NumEntries     uint32 `json:"num_entries"`
	EntrySize      uint32 `json:"entry_size"`
	ArrayCRC       string `json:"array_crc"`
}

type layoutCopy struct {
	HeaderLBA uint64       `json:"header_lba"`
	Header    layoutHeader `json:"header"`
	HeaderHex string       `json:"header_hex"`
	// ArrayHex is the entry array when it differs from Slots (or when
	// Slots come from the other copy and differ); omitted when it is the
	// same as Slots. ArrayAbsent: the array could not be read.
	ArrayHex    string `json:"array_hex,omitempty"`
	ArrayAbsent bool   `json:"array_absent,omitempty"`
}

type layoutSlot struct {
	Slot     int    `json:"slot"`
	Used     bool   `json:"used"`
	Type     string `json:"type,omitempty"`
	TypeName string `json:"type_name,omitempty"`
	Unique   string `json:"unique,omitempty"`
	First    uint64 `json:"first,omitempty"`
	Last     uint64 `json:"last,omitempty"`
	Size     string `json:"size,omitempty"` // for reading: (last-first+1) sectors in binary units
	Attrs    uint64 `json:"attrs,omitempty"`
	Name     string `json:"name,omitempty"`
	// Raw is the whole entry in hex; omitted for an all-zero slot.
	Raw string `json:"raw_hex,omitempty"`
}

func headerJSON(h Header) layoutHeader {
	return layoutHeader{
		Signature: string(h.Signature[:]), Revision: fmt.Sprintf("%08X", h.Revision), HeaderSize: h.HeaderSize,
		HeaderCRC: fmt.Sprintf("%08X", h.HeaderCRC), MyLBA: h.MyLBA, AlternateLBA: h.AlternateLBA,
		FirstUsableLBA: h.FirstUsableLBA, LastUsableLBA: h.LastUsableLBA, DiskGUID: h.DiskGUID.String(),
		EntryLBA: h.EntryLBA, NumEntries: h.NumEntries, EntrySize: h.EntrySize, ArrayCRC: fmt.Sprintf("%08X", h.ArrayCRC),
	}
}

// isZero reports whether every byte of b is zero.
func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// SaveLayout writes t as a human-readable JSON layout file: sector and
// disk size, the protective MBR, every header with its fields and raw
// sector in hex, and every slot of the entry array with its decoded
// fields and raw bytes in hex. LoadLayout reads it back into the same
// Table; gptdiff and gptfix accept it as a reference.
func SaveLayout(w io.Writer, t *Table) error {
	lf := layoutFile{
		Format:     LayoutFormat,
		Note:       "raw_hex fields are authoritative; decoded fields are for reading and must agree with them; an all-zero slot has no raw_hex",
		SectorSize: t.SectorSize, DiskSize: t.DiskSize, DiskLBAs: uint64(t.DiskSize / int64(t.SectorSize)),
		MBR: hex.EncodeToString(t.MBR), Problems: t.Problems,
	}
	var slotsArr []byte
	if best := t.Best(); best != nil {
		lf.SlotsFrom, slotsArr = best.Which, best.Array
	} else if t.Primary != nil && t.Primary.Array != nil {
		lf.SlotsFrom, slotsArr = "primary", t.Primary.Array
	} else if t.Backup != nil && t.Backup.Array != nil {
		lf.SlotsFrom, slotsArr = "backup", t.Backup.Array
	}
	if lf.SlotsFrom != "" {
		c := t.Primary
		if lf.SlotsFrom == "backup" {
			c = t.Backup
		}
		lf.SlotSize = int(c.Header.EntrySize)
		for _, s := range c.Slots() {
			ls := slotFields(s, t.SectorSize)
			if !isZero(s.Raw) {
				ls.Raw = hex.EncodeToString(s.Raw)
			}
			lf.Slots = append(lf.Slots, ls)
		}
	}
	cp := func(c *Copy) *layoutCopy {
		if c == nil {
			return nil
		}
		lc := &layoutCopy{HeaderLBA: c.HeaderLBA, Header: headerJSON(c.Header), HeaderHex: hex.EncodeToString(c.HeaderRaw)}
		switch {
		case c.Array == nil:
			lc.ArrayAbsent = true
		case !bytes.Equal(c.Array, slotsArr):
			lc.ArrayHex = hex.EncodeToString(c.Array)
		}
		return lc
	}
	lf.Primary, lf.Backup, lf.Stray = cp(t.Primary), cp(t.Backup), cp(t.StrayBackup)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&lf); err != nil {
		return fmt.Errorf("gpt: writing layout: %w", err)
	}
	return nil
}

// LoadLayout reads a layout file written by SaveLayout. The raw bytes are
// put back at their LBAs of a virtual disk of the saved size and read with
// Read, so the Table and its Problems are exactly what Read finds on a
// disk holding those bytes. Decoded fields that disagree with the raw
// bytes are an error (edit raw_hex, not the decoded fields).
func LoadLayout(r io.Reader) (*Table, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxLayoutBytes+1))
	if err != nil {
		return nil, fmt.Errorf("gpt: reading layout: %w", err)
	}
	if len(data) > maxLayoutBytes {
		return nil, fmt.Errorf("gpt: layout file larger than %d bytes", maxLayoutBytes)
	}
	var lf layoutFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&lf); err != nil {
		return nil, fmt.Errorf("gpt: layout file: %w", err)
	}
	if lf.Format != LayoutFormat {
		return nil, fmt.Errorf("gpt: layout file: format %q, want %q", lf.Format, LayoutFormat)
	}
	ss := lf.SectorSize
	if ss != 512 && ss != 4096 {
		return nil, fmt.Errorf("gpt: layout file: sector size %d (want 512 or 4096)", ss)
	}
	if lf.DiskSize < 3*int64(ss) || lf.DiskSize > maxDiskBytes {
		return nil, fmt.Errorf("gpt: layout file: disk size %d out of range", lf.DiskSize)
	}
	if lf.DiskLBAs != uint64(lf.DiskSize/int64(ss)) {
		return nil, fmt.Errorf("gpt: layout file: disk_lbas %d does not match disk_size %d / %d", lf.DiskLBAs, lf.DiskSize, ss)
	}
	v := &virtualDisk{size: lf.DiskSize}
	mbr, err := hexField("mbr_hex", lf.MBR, ss)
	if err != nil {
		return nil, err
	}
	v.put(0, mbr)

	// The slots, as one array.
	var slotsArr []byte
	if len(lf.Slots) > 0 {
		esize := lf.SlotSize
		if !validEntrySize(uint32(esize)) || int64(esize)*int64(len(lf.Slots)) > MaxArrayBytes {
			return nil, fmt.Errorf("gpt: layout file: %d slots of %d bytes", len(lf.Slots), esize)
		}
		slotsArr = make([]byte, 0, esize*len(lf.Slots))
		for i, s := range lf.Slots {
			if s.Slot != i+1 {
				return nil, fmt.Errorf("gpt: layout file: slot %d listed as number %d", i+1, s.Slot)
			}
			raw := make([]byte, esize)
			if s.Raw != "" {
				b, err := hexField(fmt.Sprintf("slot %d raw_hex", s.Slot), s.Raw, esize)
				if err != nil {
					return nil, err
				}
				raw = b
			}
			if err := checkSlotFields(Slot{Index: s.Slot, Raw: raw}, s, ss); err != nil {
				return nil, err
			}
			slotsArr = append(slotsArr, raw...)
		}
	}
	for _, c := range []struct {
		name string
		lc   *layoutCopy
	}{{"primary", lf.Primary}, {"stray_backup", lf.Stray}, {"backup", lf.Backup}} {
		if c.lc == nil {
			continue
		}
		if c.lc.HeaderLBA >= lf.DiskLBAs {
			return nil, fmt.Errorf("gpt: layout file: %s header at LBA %d is past the disk end", c.name, c.lc.HeaderLBA)
		}
		raw, err := hexField(c.name+" header_hex", c.lc.HeaderHex, ss)
		if err != nil {
			return nil, err
		}
		if got := headerJSON(ParseHeader(raw)); got != c.lc.Header {
			return nil, fmt.Errorf("gpt: layout file: %s header fields disagree with header_hex (decoded from hex: %+v)", c.name, got)
		}
		h := ParseHeader(raw)
		arr := slotsArr
		switch {
		case c.lc.ArrayAbsent:
			arr = nil
		case c.lc.ArrayHex != "":
			if len(c.lc.ArrayHex) > 2*MaxArrayBytes {
				return nil, fmt.Errorf("gpt: layout file: %s array larger than %d bytes", c.name, MaxArrayBytes)
			}
			if arr, err = hex.DecodeString(c.lc.ArrayHex); err != nil {
				return nil, fmt.Errorf("gpt: layout file: %s array_hex: %w", c.name, err)
			}
		}
		if arr != nil {
			if h.EntryLBA >= lf.DiskLBAs || h.EntryLBA > (uint64(lf.DiskSize)-uint64(len(arr)))/uint64(ss) {
				return nil, fmt.Errorf("gpt: layout file: %s entry array at LBA %d does not fit the disk", c.name, h.EntryLBA)
			}
			v.put(int64(h.EntryLBA)*int64(ss), arr)
		}
		v.put(int64(c.lc.HeaderLBA)*int64(ss), raw)
	}
	t, err := Read(v, lf.DiskSize, ss)
	if err != nil {
		return nil, fmt.Errorf("gpt: layout file: %w", err)
	}
	// The copies must come back where the file says they were.
	for _, c := range []struct {
		name string
		lc   *layoutCopy
		got  *Copy
	}{{"primary", lf.Primary, t.Primary}, {"backup", lf.Backup, t.Backup}, {"stray_backup", lf.Stray, t.StrayBackup}} {
		switch {
		case c.lc == nil && c.got != nil:
			return nil, fmt.Errorf("gpt: layout file: no %s listed, but the saved bytes hold one at LBA %d", c.name, c.got.HeaderLBA)
		case c.lc != nil && (c.got == nil || c.got.HeaderLBA != c.lc.HeaderLBA):
			return nil, fmt.Errorf("gpt: layout file: the %s header at LBA %d is not where a reader finds it (the file is inconsistent)", c.name, c.lc.HeaderLBA)
		}
	}
	return t, nil
}

// maxDiskBytes bounds disk sizes read from files (8 EiB - 1 is int64's
// limit; 2^60 leaves room for LBA arithmetic).
const maxDiskBytes = int64(1) << 60

func hexField(name, s string, want int) ([]byte, error) {
	if len(s) != 2*want {
		return nil, fmt.Errorf("gpt: layout file: %s has %d hex digits, want %d", name, len(s), 2*want)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gpt: layout file: %s: %w", name, err)
	}
	return b, nil
}

// slotFields is a slot's decoded fields as the layout file shows them
// (everything but raw_hex).
func slotFields(s Slot, sectorSize int) layoutSlot {
	ls := layoutSlot{Slot: s.Index, Used: s.Used()}
	if ls.Used {
		e := s.Entry()
		ls.Type, ls.TypeName, ls.Unique = e.Type.String(), TypeName(e.Type), e.Unique.String()
		ls.First, ls.Last, ls.Attrs, ls.Name = e.First, e.Last, e.Attrs, e.Name
		ls.Size = HumanBytes(int64(e.Sectors()) * int64(sectorSize))
	}
	return ls
}

// checkSlotFields makes sure the decoded fields written for a slot agree
// with its raw bytes.
func checkSlotFields(s Slot, ls layoutSlot, sectorSize int) error {
	want := slotFields(s, sectorSize)
	want.Raw = ls.Raw
	// Accept any case for GUID text.
	ls.Type, ls.Unique = strings.ToUpper(ls.Type), strings.ToUpper(ls.Unique)
	if ls != want {
		return fmt.Errorf("gpt: layout file: slot %d: decoded fields disagree with raw_hex (raw says %s %s %d-%d attrs %X name %q)",
			s.Index, want.Type, want.Unique, want.First, want.Last, want.Attrs, want.Name)
	}
	return nil
}

// virtualDisk is an io.ReaderAt over a disk of size bytes that is all
// zeros except for the extents put into it (later extents win).
type virtualDisk struct {
	size    int64
	extents []extent
}

type extent struct {
	off int64
	b   []byte
}

func (v *virtualDisk) put(off int64, b []byte) {
	v.extents = append(v.extents, extent{off, b})
}

func (v *virtualDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= v.size {
		return 0, io.EOF
	}
	n := len(p)
	var err error
	if int64(n) > v.size-off {
		n, err = int(v.size-off), io.EOF
	}
	clear(p[:n])
	for _, e := range v.extents {
		lo, hi := max(off, e.off), min(off+int64(n), e.off+int64(len(e.b)))
		if lo < hi {
			copy(p[lo-off:hi-off], e.b[lo-e.off:hi-e.off])
		}
	}
	return n, err
}
