package gpt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
	"sort"
	"strings"
)

// Limits on what Read accepts from a header. Anything outside them is
// reported as a problem of that copy and its array is not read, so a
// corrupt or hostile header can never cause a huge allocation.
const (
	// MinEntrySize is the smallest entry size the UEFI spec allows.
	MinEntrySize = 128
	// MaxArrayBytes bounds NumEntries*EntrySize. The usual array is
	// 16 KiB (128 entries of 128 bytes); 1 MiB leaves room for every
	// real table ever seen while keeping reads small.
	MaxArrayBytes = 1 << 20
)

// Problem codes. Codes marked fatal make a copy unusable as a source of
// truth (Copy.Valid reports false); the others describe a usable table
// that is nevertheless wrong for this disk.
const (
	CodeSignature   = "signature"   // fatal: no "EFI PART" (only on Problems of a Copy kept for inspection)
	CodeRevision    = "revision"    // fatal: revision is not 1.0
	CodeHeaderSize  = "header-size" // fatal: header size < 92 or > sector size
	CodeHeaderCRC   = "header-crc"  // fatal: header CRC32 wrong
	CodeArrayCRC    = "array-crc"   // fatal: entry array CRC32 wrong
	CodeEntrySize   = "entry-size"  // fatal: entry size not 128*2^n or too big
	CodeEntryCount  = "entry-count" // fatal: zero entries or array larger than MaxArrayBytes
	CodeArrayRange  = "array-range" // fatal: array past the disk end or over a header
	CodeTruncated   = "truncated"   // fatal: array could not be read in full
	CodeMyLBA       = "my-lba"      // fatal: MyLBA differs from where the header was found
	CodeAltLBA      = "alternate-lba"
	CodeUsableRange = "usable-range"
	CodeEntryRange  = "entry-range"
	CodeOverlap     = "overlap"
	CodeDupGUID     = "duplicate-guid"

	CodePrimaryMissing  = "primary-missing"
	CodePrimaryInvalid  = "primary-invalid"
	CodeBackupMissing   = "backup-missing"
	CodeBackupInvalid   = "backup-invalid"
	CodeBackupNotAtEnd  = "backup-not-at-end"
	CodeStrayBackup     = "stray-backup"
	CodeFakeBackup      = "fake-backup"      // a header the damaged primary points to lies inside a partition: ignored
	CodeBackupAmbiguous = "backup-ambiguous" // fatal: two different valid backups and no telling which is right
	CodeArraysDiffer    = "arrays-differ"
	CodeHeadersDiffer   = "headers-differ"
	CodeMBRSignature    = "mbr-signature"
	CodeMBRNoProtective = "mbr-no-protective"
	CodeMBRSize         = "mbr-size"
	CodeMBRStart        = "mbr-start"
)

func (c *Copy) add(code, format string, args ...any) {
	c.Problems = append(c.Problems, Problem{Code: code, Copy: c.Which, Detail: fmt.Sprintf(format, args...)})
}

func (t *Table) add(code, which, format string, args ...any) {
	t.Problems = append(t.Problems, Problem{Code: code, Copy: which, Detail: fmt.Sprintf(format, args...)})
}

// validEntrySize reports whether n is 128*2^k and keeps a single entry
// within MaxArrayBytes.
func validEntrySize(n uint32) bool {
	return n >= MinEntrySize && n <= MaxArrayBytes && n%MinEntrySize == 0 && bits.OnesCount32(n/MinEntrySize) == 1
}

// arraySectors is the number of sectors the array of h occupies.
func arraySectors(h Header, sectorSize int) uint64 {
	n := uint64(h.NumEntries) * uint64(h.EntrySize)
	return (n + uint64(sectorSize) - 1) / uint64(sectorSize)
}

// checkHeader validates the header of c (read at c.HeaderLBA) on a disk
// whose last LBA is lastLBA (0 = unknown, as for a stream head) and tells
// whether the array may be read (sizes sane, inside the disk).
func checkHeader(c *Copy, sectorSize int, lastLBA uint64) (readArray bool) {
	h := c.Header
	if h.Revision != Revision10 {
		c.add(CodeRevision, "header revision is 0x%08X, expected 0x%08X (1.0)", h.Revision, Revision10)
	}
	if h.HeaderSize < MinHeaderSize || int(h.HeaderSize) > sectorSize {
		c.add(CodeHeaderSize, "header size is %d bytes, must be between %d and the sector size %d", h.HeaderSize, MinHeaderSize, sectorSize)
	} else if crc, _ := HeaderCRCOf(c.HeaderRaw); crc != h.HeaderCRC {
		c.add(CodeHeaderCRC, "header checksum is wrong (stored %08X, computed %08X)", h.HeaderCRC, crc)
	}
	if h.MyLBA != c.HeaderLBA {
		c.add(CodeMyLBA, "header says it is at LBA %d but was found at LBA %d", h.MyLBA, c.HeaderLBA)
	}
	readArray = true
	if !validEntrySize(h.EntrySize) {
		c.add(CodeEntrySize, "entry size is %d bytes, must be 128, 256, 512, ... (a power of two times 128)", h.EntrySize)
		readArray = false
	}
	if h.NumEntries == 0 {
		c.add(CodeEntryCount, "the header declares zero partition entries")
		readArray = false
	} else if uint64(h.NumEntries)*uint64(h.EntrySize) > MaxArrayBytes {
		c.add(CodeEntryCount, "the header declares %d entries of %d bytes (%d bytes), more than the %d bytes accepted",
			h.NumEntries, h.EntrySize, uint64(h.NumEntries)*uint64(h.EntrySize), MaxArrayBytes)
		readArray = false
	}
	if !readArray {
		return false
	}
	n := arraySectors(h, sectorSize)
	first, last := h.EntryLBA, h.EntryLBA+n-1
	switch {
	case first < 2 || last < first:
		c.add(CodeArrayRange, "entry array at LBA %d would overlap the protective MBR or the primary header", first)
		readArray = false
	case lastLBA != 0 && last > lastLBA:
		c.add(CodeArrayRange, "entry array at LBA %d-%d runs past the end of the disk (last LBA %d)", first, last, lastLBA)
		readArray = false
	case first <= c.HeaderLBA && c.HeaderLBA <= last:
		c.add(CodeArrayRange, "entry array at LBA %d-%d overlaps its own header at LBA %d", first, last, c.HeaderLBA)
		readArray = false
	}
	// Usable range: inside the disk, not over this copy's array or header.
	switch {
	case h.FirstUsableLBA > h.LastUsableLBA:
		c.add(CodeUsableRange, "first usable LBA %d is after last usable LBA %d", h.FirstUsableLBA, h.LastUsableLBA)
	case lastLBA != 0 && h.LastUsableLBA >= lastLBA:
		c.add(CodeUsableRange, "last usable LBA %d is at or past the disk's last LBA %d (the disk is smaller than the table)", h.LastUsableLBA, lastLBA)
	case readArray && first <= h.LastUsableLBA && h.FirstUsableLBA <= last:
		c.add(CodeUsableRange, "usable LBAs %d-%d overlap the entry array at LBA %d-%d", h.FirstUsableLBA, h.LastUsableLBA, first, last)
	case h.FirstUsableLBA <= c.HeaderLBA && c.HeaderLBA <= h.LastUsableLBA:
		c.add(CodeUsableRange, "usable LBAs %d-%d include the header at LBA %d", h.FirstUsableLBA, h.LastUsableLBA, c.HeaderLBA)
	case h.FirstUsableLBA < 2:
		c.add(CodeUsableRange, "first usable LBA %d overlaps the protective MBR or primary header", h.FirstUsableLBA)
	}
	if lastLBA != 0 {
		if c.Which == "primary" && h.AlternateLBA > lastLBA {
			c.add(CodeAltLBA, "points to a backup at LBA %d, past the end of the disk (last LBA %d)", h.AlternateLBA, lastLBA)
		}
		if c.Which == "backup" && h.AlternateLBA != 1 {
			c.add(CodeAltLBA, "points to a primary at LBA %d instead of LBA 1", h.AlternateLBA)
		}
	}
	return readArray
}

// checkArray verifies the array CRC of c.
func checkArray(c *Copy) {
	if crc := crc32.ChecksumIEEE(c.Array); crc != c.Header.ArrayCRC {
		c.add(CodeArrayCRC, "entry array checksum is wrong (stored %08X, computed %08X)", c.Header.ArrayCRC, crc)
	}
}

// checkEntries checks the used slots of c against its usable range and the
// disk end, and against each other (overlaps, duplicate unique GUIDs).
// Problems go to t with copy name which ("" when both copies agree).
func checkEntries(t *Table, c *Copy, which string) {
	h := c.Header
	lastLBA := t.LastLBA()
	type span struct {
		slot        int
		first, last uint64
	}
	var spans []span
	seen := map[GUID]int{}
	for _, s := range c.Slots() {
		if !s.Used() {
			continue
		}
		e := s.Entry()
		switch {
		case e.Last < e.First:
			t.add(CodeEntryRange, which, "entry %d ends (LBA %d) before it starts (LBA %d)", s.Index, e.Last, e.First)
		case e.Last > lastLBA:
			t.add(CodeEntryRange, which, "entry %d (LBA %d-%d) runs past the end of the disk (last LBA %d)", s.Index, e.First, e.Last, lastLBA)
		case e.First < h.FirstUsableLBA || e.Last > h.LastUsableLBA:
			t.add(CodeEntryRange, which, "entry %d (LBA %d-%d) lies outside the usable LBAs %d-%d", s.Index, e.First, e.Last, h.FirstUsableLBA, h.LastUsableLBA)
		}
		if e.Last >= e.First {
			spans = append(spans, span{s.Index, e.First, e.Last})
		}
		if e.Unique.IsZero() {
			t.add(CodeDupGUID, which, "entry %d has an all-zero unique GUID", s.Index)
		} else if prev, ok := seen[e.Unique]; ok {
			t.add(CodeDupGUID, which, "entries %d and %d have the same unique GUID %s", prev, s.Index, e.Unique)
		} else {
			seen[e.Unique] = s.Index
		}
	}
	// Overlaps in one pass: each span against the one reaching furthest
	// among those starting before it.
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].first < spans[j].first })
	for i, far := 1, 0; i < len(spans); i++ {
		if spans[far].last >= spans[i].first {
			t.add(CodeOverlap, which, "entries %d (LBA %d-%d) and %d (LBA %d-%d) overlap",
				spans[far].slot, spans[far].first, spans[far].last, spans[i].slot, spans[i].first, spans[i].last)
		}
		if spans[i].last > spans[far].last {
			far = i
		}
	}
}

// maxPerCode bounds how many problems of one code a table reports; a
// corrupt array of thousands of entries gets a summary instead.
const maxPerCode = 16

// capProblems keeps at most n problems of each code in t.Problems and adds
// a count of the rest, in a stable order.
func capProblems(t *Table, n int) {
	count := map[string]int{}
	var order []string
	var out []Problem
	for _, p := range t.Problems {
		if count[p.Code] == 0 {
			order = append(order, p.Code)
		}
		count[p.Code]++
		if count[p.Code] <= n {
			out = append(out, p)
		}
	}
	for _, code := range order {
		if c := count[code]; c > n {
			out = append(out, Problem{Code: code, Detail: fmt.Sprintf("... and %d more problems of this kind (%s)", c-n, code)})
		}
	}
	t.Problems = out
}

// checkAgreement compares two valid copies: arrays byte for byte and
// header fields except the mirrored ones (MyLBA, AlternateLBA, EntryLBA,
// HeaderCRC).
func checkAgreement(t *Table, p, b *Copy) {
	if !bytes.Equal(p.Array, b.Array) {
		var diff []string
		ps, bs := p.Slots(), b.Slots()
		for i := 0; i < len(ps) && i < len(bs); i++ {
			if !bytes.Equal(ps[i].Raw, bs[i].Raw) {
				diff = append(diff, fmt.Sprint(i+1))
			}
		}
		what := "entries " + strings.Join(limitList(diff, 12), ",")
		if len(ps) != len(bs) {
			what = fmt.Sprintf("%d entries against %d", len(ps), len(bs))
		}
		t.add(CodeArraysDiffer, "", "the primary and backup entry arrays differ (%s)", what)
	}
	ph, bh := p.Header, b.Header
	var f []string
	differ := func(differs bool, format string, pv, bv any) {
		if differs {
			f = append(f, fmt.Sprintf(format, pv, bv))
		}
	}
	differ(ph.Revision != bh.Revision, "revision %08X/%08X", ph.Revision, bh.Revision)
	differ(ph.HeaderSize != bh.HeaderSize, "header size %d/%d", ph.HeaderSize, bh.HeaderSize)
	differ(ph.FirstUsableLBA != bh.FirstUsableLBA, "first usable LBA %d/%d", ph.FirstUsableLBA, bh.FirstUsableLBA)
	differ(ph.LastUsableLBA != bh.LastUsableLBA, "last usable LBA %d/%d", ph.LastUsableLBA, bh.LastUsableLBA)
	differ(ph.DiskGUID != bh.DiskGUID, "disk GUID %s/%s", ph.DiskGUID, bh.DiskGUID)
	differ(ph.NumEntries != bh.NumEntries, "entry count %d/%d", ph.NumEntries, bh.NumEntries)
	differ(ph.EntrySize != bh.EntrySize, "entry size %d/%d", ph.EntrySize, bh.EntrySize)
	differ(ph.ArrayCRC != bh.ArrayCRC, "array checksum %08X/%08X", ph.ArrayCRC, bh.ArrayCRC)
	if ph.AlternateLBA != b.HeaderLBA {
		f = append(f, fmt.Sprintf("primary points to a backup at LBA %d, but it is at %d", ph.AlternateLBA, b.HeaderLBA))
	}
	if len(f) > 0 {
		t.add(CodeHeadersDiffer, "", "the primary and backup headers disagree (primary/backup): %s", strings.Join(f, "; "))
	}
}

func limitList(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], "...")
}

// checkMBR checks the protective MBR: boot signature, a 0xEE record
// starting at LBA 1 and covering the disk. A hybrid MBR (other records
// besides the 0xEE one, as sgdisk -h makes) keeps its 0xEE record short on
// purpose; it is only wrong when that record overlaps another record or
// runs past the disk end (see protectiveMBR).
func checkMBR(t *Table) {
	m := t.MBR
	if len(m) < 512 {
		return
	}
	if m[510] != 0x55 || m[511] != 0xAA {
		t.add(CodeMBRSignature, "mbr", "the protective MBR has no 55AA boot signature")
		return
	}
	for i := 0; i < 4; i++ {
		r := m[446+16*i : 446+16*(i+1)]
		if r[4] != 0xEE {
			continue
		}
		start := binary.LittleEndian.Uint32(r[8:])
		size := binary.LittleEndian.Uint32(r[12:])
		if start != 1 {
			t.add(CodeMBRStart, "mbr", "the protective partition starts at LBA %d instead of 1", start)
		}
		pm := protectiveMBR(m, t.LastLBA())
		switch {
		case pm.off < 0 || pm.want == size:
		case pm.hybrid && pm.capBy >= 0:
			o := pm.others[pm.capBy]
			t.add(CodeMBRSize, "mbr", "the hybrid MBR's 0xEE record (LBA 1-%d) overlaps MBR record %d (LBA %d-%d)", size, o.index+1, o.start, o.end())
		case pm.hybrid:
			t.add(CodeMBRSize, "mbr", "the hybrid MBR's 0xEE record (LBA 1-%d) runs past the disk's last LBA %d", size, t.LastLBA())
		default:
			t.add(CodeMBRSize, "mbr", "the protective partition covers %d sectors, the disk needs %d (it was made for a disk of another size)", size, pm.want)
		}
		return
	}
	t.add(CodeMBRNoProtective, "mbr", "the MBR has no protective GPT partition (type EE)")
}

// mbrRecord is one used record of an MBR's partition table.
type mbrRecord struct {
	index       int // 0-3
	typ         byte
	start, size uint32
}

func (r mbrRecord) end() uint64 { return uint64(r.start) + uint64(r.size) - 1 }

// protective describes the 0xEE record of an MBR and what its size
// should be on a disk: see protectiveMBR.
type protective struct {
	off    int         // offset of the 0xEE record's size field; -1 when there is no 0xEE record starting at LBA 1
	size   uint32      // its size now
	want   uint32      // the size it should have
	hybrid bool        // other records exist besides the 0xEE one
	others []mbrRecord // those records
	capBy  int         // index into others of the record that caps want, or -1
}

// protectiveMBR works out the size the 0xEE record (starting at LBA 1) of
// MBR m should have on a disk whose last LBA is last. A plain protective
// MBR covers the whole disk (at most 0xFFFFFFFF sectors). A hybrid MBR's
// 0xEE record is left as it is, unless it overlaps one of the other
// records (it then ends before the first one it overlaps) or runs past the
// disk end.
func protectiveMBR(m []byte, last uint64) protective {
	p := protective{off: -1, capBy: -1}
	if len(m) < 512 || m[510] != 0x55 || m[511] != 0xAA {
		return p
	}
	for i := 0; i < 4; i++ {
		r := m[446+16*i : 446+16*(i+1)]
		rec := mbrRecord{i, r[4], binary.LittleEndian.Uint32(r[8:]), binary.LittleEndian.Uint32(r[12:])}
		switch {
		case rec.typ == 0xEE && rec.start == 1 && p.off < 0:
			p.off, p.size = 446+16*i+12, rec.size
		case rec.typ != 0 && rec.size != 0:
			p.others = append(p.others, rec)
		}
	}
	limit := uint32(min(last, 0xFFFFFFFF))
	p.hybrid = len(p.others) > 0
	if p.off < 0 || !p.hybrid {
		p.want = limit
		return p
	}
	p.want = min(p.size, limit)
	for i, o := range p.others {
		if o.start > 1 && uint64(o.start) <= uint64(p.want) {
			p.want, p.capBy = o.start-1, i
		}
	}
	return p
}
