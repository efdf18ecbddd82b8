// Package gpt reads, checks, compares and repairs GUID partition tables
// slot for slot: every entry of the entry array is kept as raw bytes at its
// index, so that nothing a partition editor would drop or reorder (unused
// slots, gaps, bytes after a name's NUL) is ever lost.
package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Read reads the GPT of a disk or image of size bytes from r, with the
// given logical sector size (512 or 4096; 0 means 512).
//
// It reads the protective MBR, the primary header at LBA 1, and backup
// headers both at the last LBA and where the primary's AlternateLBA points
// (a disk restored onto a bigger one has its backup stranded in the middle;
// a disk whose primary is damaged has it only at the end). Every header
// found is validated before its array is read; what is wrong goes into
// the Problems of the copy and of the table. Read returns an error only
// when the input cannot be a disk at all (bad sector size, fewer than 3
// sectors) or cannot be read.
func Read(r io.ReaderAt, size int64, sectorSize int) (*Table, error) {
	if sectorSize == 0 {
		sectorSize = 512
	}
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("gpt: sector size %d is not supported (512 or 4096)", sectorSize)
	}
	if size < 3*int64(sectorSize) {
		return nil, fmt.Errorf("gpt: disk of %d bytes is too small for a GPT (needs at least 3 sectors of %d bytes)", size, sectorSize)
	}
	t := &Table{SectorSize: sectorSize, DiskSize: size}
	last := t.LastLBA()
	var err error
	if t.MBR, err = readSectors(r, 0, 1, sectorSize); err != nil {
		return nil, fmt.Errorf("gpt: reading the protective MBR: %w", err)
	}
	checkMBR(t)

	t.Primary, err = readCopy(r, "primary", 1, sectorSize, last)
	if err != nil {
		return nil, err
	}
	switch {
	case t.Primary == nil:
		t.add(CodePrimaryMissing, "primary", "no GPT header at LBA 1")
	case !t.Primary.Valid():
		t.add(CodePrimaryInvalid, "primary", "the primary GPT is damaged and cannot be used")
	}

	// Backup candidates: the last LBA, and the primary's AlternateLBA when
	// it points somewhere else inside the disk. The primary's pointer is
	// used even when the primary is damaged: whatever is found there is
	// validated on its own (signature, CRCs, MyLBA).
	atEnd, err := readCopy(r, "backup", last, sectorSize, last)
	if err != nil {
		return nil, err
	}
	var atAlt *Copy
	if p := t.Primary; p != nil && p.Header.AlternateLBA > 1 && p.Header.AlternateLBA < last {
		if atAlt, err = readCopy(r, "backup", p.Header.AlternateLBA, sectorSize, last); err != nil {
			return nil, err
		}
	}
	// Neither valid: a disk restored onto a bigger one whose primary is
	// gone still has the backup at the old last LBA, which the protective
	// MBR's size field (start 1, size = old last LBA) usually remembers.
	if !atAlt.Valid() && !atEnd.Valid() {
		if hint := mbrLastLBA(t.MBR); hint > 1 && hint < last && (atAlt == nil || hint != atAlt.HeaderLBA) {
			c, err := readCopy(r, "backup", hint, sectorSize, last)
			if err != nil {
				return nil, err
			}
			if c.Valid() {
				atAlt = c
			}
		}
	}
	ambiguous := false
	switch {
	case atAlt.Valid() && atEnd.Valid() && !t.Primary.Valid():
		ambiguous = chooseBackup(t, atAlt, atEnd)
	case atAlt.Valid() && atEnd.Valid():
		t.Backup, t.StrayBackup = atAlt, atEnd
		t.add(CodeStrayBackup, "backup", "two backup headers found: at LBA %d (where the primary points) and at the last LBA %d", atAlt.HeaderLBA, last)
	case atAlt.Valid():
		t.Backup = atAlt
	case atEnd.Valid():
		t.Backup = atEnd
		if atAlt != nil {
			t.StrayBackup = atAlt // damaged, kept for inspection
		}
	case atAlt != nil:
		t.Backup = atAlt
	default:
		t.Backup = atEnd
	}
	switch b := t.Backup; {
	case ambiguous:
	case b == nil:
		t.add(CodeBackupMissing, "backup", "no backup GPT header at the last LBA %d%s", last, altNote(t.Primary, last))
	case !b.Valid():
		t.add(CodeBackupInvalid, "backup", "the backup GPT at LBA %d is damaged and cannot be used", b.HeaderLBA)
	case b.HeaderLBA != last:
		t.add(CodeBackupNotAtEnd, "backup", "the backup GPT is at LBA %d, not at the disk's last LBA %d: the table was made for a disk of %s, this one has %s",
			b.HeaderLBA, last, HumanBytes(int64(b.HeaderLBA+1)*int64(sectorSize)), HumanBytes(size))
	}
	if t.Primary.Valid() && t.Backup.Valid() {
		checkAgreement(t, t.Primary, t.Backup)
	}
	if best := t.Best(); best != nil {
		checkEntries(t, best, "")
		if o := t.other(best); o.Valid() && !bytes.Equal(o.Array, best.Array) {
			checkEntries(t, o, o.Which)
		}
	}
	capProblems(t, maxPerCode)
	return t, nil
}

// chooseBackup picks the backup of a table whose primary is damaged and
// that has two valid backup candidates with the given arrays: alt, found
// only through the damaged primary's AlternateLBA, and end, at the last
// LBA. A damaged header's pointer proves nothing, so end wins (as in
// sgdisk, which then reads only the last LBA), unless something speaks for
// alt: the protective MBR ends where alt is (a table made for a smaller
// disk, now restored onto this one), or end lies inside one of alt's
// partitions. Then which one is right cannot be told: both are marked
// unusable (CodeBackupAmbiguous) and the problem says why, so that
// nothing is rebuilt from either without a reference. An alt that lies
// inside one of end's partitions is ignored (planted or stale bytes in a
// partition's data) and said so. It reports whether it was ambiguous.
func chooseBackup(t *Table, alt, end *Copy) bool {
	last := t.LastLBA()
	if bytes.Equal(alt.Array, end.Array) {
		t.Backup, t.StrayBackup = end, alt
		t.add(CodeStrayBackup, "backup", "two backup headers with the same entries found: at the last LBA %d and at LBA %d (where the damaged primary points); the one at the last LBA is used", last, alt.HeaderLBA)
		return false
	}
	altIn, endIn := insidePartition(end, alt), insidePartition(alt, end)
	mbrAlt := mbrLastLBA(t.MBR) == alt.HeaderLBA
	if !mbrAlt && endIn == 0 {
		t.Backup = end
		if altIn != 0 {
			t.add(CodeFakeBackup, "backup", "ignored the GPT header at LBA %d where the damaged primary points: it lies inside partition %d of the backup GPT at the last LBA %d, so it is partition data, not a table",
				alt.HeaderLBA, altIn, last)
			return false
		}
		t.StrayBackup = alt
		t.add(CodeStrayBackup, "backup", "two different backup GPTs found: at the last LBA %d and at LBA %d (where the damaged primary points); the one at the last LBA is used, a damaged header's pointer is not trusted", last, alt.HeaderLBA)
		return false
	}
	var why []string
	if mbrAlt {
		why = append(why, fmt.Sprintf("the protective MBR ends at LBA %d too", alt.HeaderLBA))
	}
	if endIn != 0 {
		why = append(why, fmt.Sprintf("the one at the last LBA lies inside partition %d of the other", endIn))
	}
	if altIn != 0 {
		why = append(why, fmt.Sprintf("the one at LBA %d lies inside partition %d of the other", alt.HeaderLBA, altIn))
	}
	detail := fmt.Sprintf("two different valid backup GPTs, at the last LBA %d and at LBA %d (where the damaged primary points), and it cannot be told which is right (%s): neither is used; give the right table with a reference",
		last, alt.HeaderLBA, strings.Join(why, "; "))
	for _, c := range []*Copy{end, alt} {
		c.add(CodeBackupAmbiguous, "%s", detail)
	}
	t.Backup, t.StrayBackup = end, alt
	t.add(CodeBackupAmbiguous, "backup", "%s", detail)
	return true
}

// insidePartition returns the slot of the first used entry of c whose
// LBAs include x's header or entry array, or 0.
func insidePartition(c, x *Copy) int {
	lo, hi := x.Header.EntryLBA, x.Header.EntryLBA+arraySectors(x.Header, len(x.HeaderRaw))-1
	for _, s := range c.Slots() {
		if !s.Used() {
			continue
		}
		e := s.Entry()
		if (e.First <= x.HeaderLBA && x.HeaderLBA <= e.Last) || (e.First <= hi && lo <= e.Last) {
			return s.Index
		}
	}
	return 0
}

func altNote(p *Copy, last uint64) string {
	if p == nil || p.Header.AlternateLBA <= last {
		return ""
	}
	return fmt.Sprintf("; the primary points to LBA %d, past the end of the disk", p.Header.AlternateLBA)
}

// readSectors reads n sectors at lba, failing on a short read.
func readSectors(r io.ReaderAt, lba, n uint64, sectorSize int) ([]byte, error) {
	b := make([]byte, int(n)*sectorSize)
	got, err := r.ReadAt(b, int64(lba)*int64(sectorSize))
	if got == len(b) {
		return b, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("LBA %d (+%d sectors): %w", lba, n, err)
}

// readCopy reads the header at lba and, when it looks sane, its array. It
// returns nil (and no error) when the sector has no GPT signature.
// lastLBA is the disk's last LBA, or 0 when unknown (a stream head).
func readCopy(r io.ReaderAt, which string, lba uint64, sectorSize int, lastLBA uint64) (*Copy, error) {
	raw, err := readSectors(r, lba, 1, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("gpt: reading the %s header: %w", which, err)
	}
	if string(raw[:8]) != Signature {
		return nil, nil
	}
	c := &Copy{Which: which, HeaderLBA: lba, Header: ParseHeader(raw), HeaderRaw: raw}
	if !checkHeader(c, sectorSize, lastLBA) {
		return c, nil
	}
	h := c.Header
	arr, err := readSectors(r, h.EntryLBA, arraySectors(h, sectorSize), sectorSize)
	if err != nil {
		c.add(CodeTruncated, "the entry array could not be read: %v", err)
		return c, nil
	}
	c.Array = arr[:int(h.NumEntries)*int(h.EntrySize)]
	checkArray(c)
	return c, nil
}

// Best returns the copy whose contents are trusted: the primary when it is
// valid, else the backup when it is valid, else nil (also for a nil table).
func (t *Table) Best() *Copy {
	switch {
	case t == nil:
		return nil
	case t.Primary.Valid():
		return t.Primary
	case t.Backup.Valid():
		return t.Backup
	}
	return nil
}

func (t *Table) other(c *Copy) *Copy {
	if c == t.Primary {
		return t.Backup
	}
	return t.Primary
}

// Slots returns the entry array of the best valid copy (primary if valid,
// else backup), one Slot per entry, 1-based; nil when neither is valid.
func (t *Table) Slots() []Slot { return t.Best().Slots() }

// LastUsedLBA returns the highest Last LBA of any used entry of the best
// valid copy (0 when there is none).
func (t *Table) LastUsedLBA() uint64 { return t.Best().LastUsedLBA() }

// LastUsedLBA returns the highest Last LBA of any used entry of c.
func (c *Copy) LastUsedLBA() uint64 {
	var m uint64
	for _, s := range c.Slots() {
		if s.Used() {
			if e := s.Entry(); e.Last > m {
				m = e.Last
			}
		}
	}
	return m
}

// ParsePrimary parses the primary GPT from the first bytes of a stream
// (protective MBR, header at LBA 1, entry array), as imaging does to learn
// an image's last used LBA before writing it. head must reach the end of
// the entry array. Nothing is known about the disk end, so only checks
// that need no disk size are made. It fails when there is no valid primary.
func ParsePrimary(head []byte, sectorSize int) (*Copy, error) {
	if sectorSize == 0 {
		sectorSize = 512
	}
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("gpt: sector size %d is not supported (512 or 4096)", sectorSize)
	}
	if len(head) < 2*sectorSize {
		return nil, fmt.Errorf("gpt: %d bytes are too few for a primary GPT header (need %d)", len(head), 2*sectorSize)
	}
	raw := head[sectorSize : 2*sectorSize]
	if string(raw[:8]) != Signature {
		return nil, errors.New("gpt: no GPT header at LBA 1")
	}
	h := ParseHeader(raw)
	if validEntrySize(h.EntrySize) && h.NumEntries > 0 && uint64(h.NumEntries)*uint64(h.EntrySize) <= MaxArrayBytes && h.EntryLBA >= 2 {
		end := (h.EntryLBA + arraySectors(h, sectorSize)) * uint64(sectorSize)
		if end > uint64(len(head)) {
			return nil, fmt.Errorf("gpt: the entry array ends at byte %d, only %d bytes given", end, len(head))
		}
	}
	c, err := readCopy(bytes.NewReader(head), "primary", 1, sectorSize, 0)
	if err != nil {
		return nil, err
	}
	if !c.Valid() {
		return nil, fmt.Errorf("gpt: the primary GPT is not valid: %s", problemList(c.Problems))
	}
	return c, nil
}

func problemList(ps []Problem) string {
	var b bytes.Buffer
	for i, p := range ps {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Detail)
	}
	return b.String()
}

// HumanBytes formats a byte count n in binary units with one decimal
// (e.g. "8.0 GiB", "512 B"), as the package's messages do.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// mbrLastLBA returns the last LBA the protective MBR's 0xEE record covers
// (start + size - 1), or 0 when there is none or the MBR is a hybrid one
// (whose 0xEE record says nothing about the disk's size).
func mbrLastLBA(mbr []byte) uint64 {
	if len(mbr) < 512 || mbr[510] != 0x55 || mbr[511] != 0xAA || protectiveMBR(mbr, 1<<40).hybrid {
		return 0
	}
	for i := 0; i < 4; i++ {
		r := mbr[446+16*i : 446+16*(i+1)]
		if r[4] == 0xEE {
			start := uint64(binary.LittleEndian.Uint32(r[8:]))
			size := uint64(binary.LittleEndian.Uint32(r[12:]))
			if size == 0 || size == 0xFFFFFFFF {
				return 0
			}
			return start + size - 1
		}
	}
	return 0
}
