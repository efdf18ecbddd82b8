package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
)

// FixOptions says what PlanFix should do besides the repairs it always
// considers (moving a stranded backup to the end of the disk, rebuilding a
// damaged copy from the good one, header fields, CRCs, the protective MBR
// size field).
type FixOptions struct {
	// Ref, when set, is a reference table (an image, a disk, a saved
	// layout or an sgdisk backup) whose slot layout is restored: every
	// partition on the disk is matched to a reference slot by unique GUID,
	// or by (type, first LBA, last LBA) when GUIDs were regenerated, and
	// put back at that slot. When a partition matches in full (GUID, type
	// and range), the reference's raw slot bytes are used, so names, the
	// bytes after a name's NUL and attributes come back exactly; so do
	// the bytes of unused slots. Header fields (disk GUID, usable range)
	// are taken from the reference only when its table was made for a
	// disk of this size.
	Ref *Table
	// SlotMap moves partitions: current slot -> wanted slot (1-based),
	// e.g. from esxi.Recognize. Slots not in the map stay where they are.
	// Not allowed together with Ref.
	SlotMap map[int]int
	// SlotMapReason explains SlotMap in the plan, e.g. "the ESXi 5.x layout".
	SlotMapReason string
	// GrowSlot, when non-zero, grows the partition at that (final) slot
	// to the disk's last usable LBA. It must be the last partition on disk.
	GrowSlot int
	// NoRelocate keeps the backup GPT where it is instead of moving it to
	// the end of the disk (and keeps LastUsableLBA).
	NoRelocate bool
}

// Write is one sector the plan writes.
type Write struct {
	Region string // "backup array", "backup header", "primary array", "primary header", "protective MBR"
	LBA    uint64
	Offset int64  // byte offset on the disk (LBA × sector size)
	Old    []byte // what the plan expects there; nil when not known (read at apply time)
	New    []byte
}

// backup reports whether w belongs to the backup copy (written first).
func (w Write) backup() bool { return strings.HasPrefix(w.Region, "backup") }

// Plan is a repair of one disk's GPT: human-readable steps and the exact
// sector writes. Make one with PlanFix, show it (String), then Apply it.
type Plan struct {
	SectorSize int
	DiskSize   int64
	Steps      []string // what will change, in plain words
	Notes      []string // what was noticed and deliberately left alone
	Writes     []Write  // in write order: backup array, backup header, primary header, primary array, MBR

	// RefMatch says how many partitions the reference and the disk have
	// in common (nil when the plan has no reference to remap from).
	RefMatch *RefMatch

	array      []byte // the entry array both copies will hold
	primaryHdr []byte // the primary header sector
	backupHdr  []byte // the backup header sector
	backupLBA  uint64
}

// ErrNoCommonPartition is returned (wrapped) by PlanFix when not one
// partition of the reference is on the disk: it is the reference of some
// other disk, and remapping slots from it would be meaningless.
var ErrNoCommonPartition = errors.New("the reference shares no partition with this disk")

// RefMatch counts the partitions a reference and a disk have in common.
type RefMatch struct {
	Matched int `json:"matched"`         // partitions found in both
	Disk    int `json:"disk_partitions"` // used entries on the disk
	Ref     int `json:"ref_partitions"`  // used entries in the reference
}

// Partial reports whether some partition of either side is not in the
// other.
func (m *RefMatch) Partial() bool { return m != nil && (m.Matched < m.Disk || m.Matched < m.Ref) }

// String says it in words, e.g. "3 of the disk's 4 partitions are in the
// reference, which has 5".
func (m *RefMatch) String() string {
	return fmt.Sprintf("%d of the disk's %d partition(s) are in the reference, which has %d", m.Matched, m.Disk, m.Ref)
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Writes) == 0 }

// sectorCounts returns how many sectors the plan writes, per copy (the
// protective MBR counts with the primary).
func (p *Plan) sectorCounts() (backup, primary int) {
	for _, w := range p.Writes {
		if w.backup() {
			backup++
		} else {
			primary++
		}
	}
	return
}

// atMost returns "at most " when some writes may turn out unnecessary
// (their old bytes are not known yet; see ReadOld).
func (p *Plan) atMost() string {
	for _, w := range p.Writes {
		if w.Old == nil {
			return "at most "
		}
	}
	return ""
}

// regions summarises the writes in order, one line per region with its
// LBA runs, e.g. "backup array: LBA 25165791-25165792".
func (p *Plan) regions() []string {
	var out []string
	for i := 0; i < len(p.Writes); {
		j := i
		var runs []string
		for j < len(p.Writes) && p.Writes[j].Region == p.Writes[i].Region {
			k := j
			for k+1 < len(p.Writes) && p.Writes[k+1].Region == p.Writes[i].Region && p.Writes[k+1].LBA == p.Writes[k].LBA+1 {
				k++
			}
			if k == j {
				runs = append(runs, fmt.Sprint(p.Writes[j].LBA))
			} else {
				runs = append(runs, fmt.Sprintf("%d-%d", p.Writes[j].LBA, p.Writes[k].LBA))
			}
			j = k + 1
		}
		out = append(out, fmt.Sprintf("%s: LBA %s", p.Writes[i].Region, strings.Join(runs, ", ")))
		i = j
	}
	return out
}

// String renders the plan for a sysadmin.
func (p *Plan) String() string {
	var b strings.Builder
	if p.Empty() {
		b.WriteString("Nothing to do: the partition table is consistent and fits this disk.\n")
	} else {
		b.WriteString("Planned changes to the partition table:\n")
		for i, s := range p.Steps {
			fmt.Fprintf(&b, "  %d. %s\n", i+1, s)
		}
		nb, np := p.sectorCounts()
		fmt.Fprintf(&b, "Sectors to write: %s%d for the backup copy (written and flushed first), then %d for the primary copy and MBR:\n", p.atMost(), nb, np)
		for _, r := range p.regions() {
			fmt.Fprintf(&b, "  %s\n", r)
		}
		b.WriteString("Only the GPT headers, entry arrays and the protective MBR are written; no partition data is touched.\n")
	}
	if len(p.Notes) > 0 {
		b.WriteString("Notes:\n")
		for _, n := range p.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	return b.String()
}

// PlanFix works out how to repair t, the table read from the disk the
// plan will be applied to. It writes nothing. An error means the table
// cannot be repaired safely as asked (nothing usable to start from, a disk
// too small for its partitions, a slot mapping that does not fit); the
// error says why.
func PlanFix(t *Table, opt FixOptions) (*Plan, error) {
	if t == nil {
		return nil, errors.New("gpt: no table to fix")
	}
	if opt.Ref != nil && opt.SlotMap != nil {
		return nil, errors.New("gpt: use either a reference table or a slot map, not both")
	}
	ss := t.SectorSize
	if ss != 512 && ss != 4096 {
		return nil, fmt.Errorf("gpt: sector size %d is not supported", ss)
	}
	if opt.Ref != nil && opt.Ref.SectorSize != ss {
		return nil, fmt.Errorf("gpt: the reference uses %d-byte sectors and this disk %d-byte sectors; its LBAs do not apply here", opt.Ref.SectorSize, ss)
	}
	last := t.LastLBA()
	p := &Plan{SectorSize: ss, DiskSize: t.DiskSize}

	src := t.Best()
	fromRef := false
	switch {
	case src != nil:
	case opt.Ref != nil && opt.Ref.Best() != nil:
		src, fromRef = opt.Ref.Best(), true
		p.Steps = append(p.Steps, "write a new partition table from the reference: neither the primary nor the backup GPT on this disk is usable")
	default:
		for _, pr := range t.Problems {
			if pr.Code == CodeBackupAmbiguous {
				return nil, fmt.Errorf("gpt: refusing to repair: the primary GPT is damaged and %s (-ref)", pr.Detail)
			}
		}
		return nil, fmt.Errorf("gpt: neither the primary nor the backup GPT is usable (%s); a reference (-ref) is needed to rebuild the table", problemSummary(t))
	}
	h := src.Header
	S := arraySectors(h, ss)
	arr := bytes.Clone(src.Array)
	switch {
	case !fromRef && t.Primary.Valid() && !t.Backup.Valid():
		p.Steps = append(p.Steps, "rebuild the damaged or missing backup GPT from the primary")
	case !fromRef && !t.Primary.Valid():
		p.Steps = append(p.Steps, "rebuild the damaged or missing primary GPT from the backup")
	case !fromRef && !bytes.Equal(t.Primary.Array, t.Backup.Array):
		p.Steps = append(p.Steps, "make the backup entry array equal to the primary's again (they disagree; the primary is the one boot loaders read)")
	}

	// Slot layout.
	var err error
	switch {
	case opt.Ref != nil && !fromRef:
		arr, err = remapFromRef(p, arr, h, opt.Ref)
	case opt.SlotMap != nil:
		arr, err = remapSlots(p, arr, int(h.EntrySize), opt.SlotMap, opt.SlotMapReason)
	}
	if err != nil {
		return nil, err
	}

	// Geometry: where the backup goes and what is usable.
	oldBackupLBA := h.AlternateLBA
	if src.Which == "backup" {
		oldBackupLBA = src.HeaderLBA
	}
	nh := h
	backupLBA := last
	switch {
	case opt.NoRelocate:
		backupLBA = oldBackupLBA
		if backupLBA > last || backupLBA <= S+1 {
			return nil, fmt.Errorf("gpt: the backup GPT's place, LBA %d, is not on this disk (last LBA %d); it cannot be kept there", backupLBA, last)
		}
		if backupLBA != last {
			p.Notes = append(p.Notes, fmt.Sprintf("the backup GPT stays at LBA %d although the disk ends at LBA %d (as asked)", backupLBA, last))
		}
	case oldBackupLBA != last:
		nh.LastUsableLBA = last - S - 1
		if oldBackupLBA < last {
			p.Steps = append(p.Steps, fmt.Sprintf("write the backup GPT at the disk's last LBA %d (was %d: the table was made for a disk of %s, this one has %s)",
				last, oldBackupLBA, HumanBytes(int64(oldBackupLBA+1)*int64(ss)), HumanBytes(t.DiskSize)))
		} else {
			p.Steps = append(p.Steps, fmt.Sprintf("write the backup GPT at the disk's last LBA %d (the table says %d, past the end of this %s disk)",
				last, oldBackupLBA, HumanBytes(t.DiskSize)))
		}
	}
	// A last usable LBA over the backup array or past the disk end (a
	// header written for a bigger disk, or by a broken tool) is set just
	// before the backup array, as sgdisk -e does; the partitions are
	// checked against it below.
	usableWhy := ""
	if limit := backupLBA - S - 1; backupLBA > S+1 && nh.LastUsableLBA > limit {
		usableWhy = fmt.Sprintf(": it ran over the backup entry array at LBA %d-%d", backupLBA-S, backupLBA-1)
		if nh.LastUsableLBA > last {
			usableWhy = fmt.Sprintf(": it ran past the disk's last LBA %d", last)
		}
		nh.LastUsableLBA = limit
	}
	if opt.Ref != nil && !fromRef && madeFor(opt.Ref) == t.DiskSize {
		if rb := opt.Ref.Best(); rb != nil && rb.Header.NumEntries == h.NumEntries && rb.Header.EntrySize == h.EntrySize {
			rh := rb.Header
			if rh.DiskGUID != nh.DiskGUID {
				p.Steps = append(p.Steps, fmt.Sprintf("restore the disk GUID %s from the reference (was %s)", rh.DiskGUID, nh.DiskGUID))
				nh.DiskGUID = rh.DiskGUID
			}
			if rh.FirstUsableLBA != nh.FirstUsableLBA || rh.LastUsableLBA != nh.LastUsableLBA {
				p.Steps = append(p.Steps, fmt.Sprintf("restore the usable range LBA %d-%d from the reference (was %d-%d)",
					rh.FirstUsableLBA, rh.LastUsableLBA, nh.FirstUsableLBA, nh.LastUsableLBA))
				nh.FirstUsableLBA, nh.LastUsableLBA = rh.FirstUsableLBA, rh.LastUsableLBA
			}
		}
	}
	if nh.LastUsableLBA != h.LastUsableLBA {
		p.Steps = append(p.Steps, fmt.Sprintf("set the last LBA usable for partitions to %d (was %d%s)", nh.LastUsableLBA, h.LastUsableLBA, usableWhy))
	}
	primaryEntryLBA := uint64(2)
	if src.Which == "primary" {
		primaryEntryLBA = h.EntryLBA
	}
	backupEntryLBA := backupLBA - S
	if nh.FirstUsableLBA < primaryEntryLBA+S || nh.LastUsableLBA >= backupEntryLBA || nh.FirstUsableLBA > nh.LastUsableLBA {
		return nil, fmt.Errorf("gpt: the usable range LBA %d-%d does not fit between the primary array (LBA %d-%d) and the backup array (LBA %d-%d) on this %s disk",
			nh.FirstUsableLBA, nh.LastUsableLBA, primaryEntryLBA, primaryEntryLBA+S-1, backupEntryLBA, backupLBA-1, HumanBytes(t.DiskSize))
	}

	if opt.GrowSlot != 0 {
		if err := growSlot(p, arr, int(h.EntrySize), opt.GrowSlot, nh.LastUsableLBA); err != nil {
			return nil, err
		}
	}

	// Every partition must fit the disk: refuse a shrunk disk.
	for _, s := range splitSlots(arr, int(h.EntrySize)) {
		if !s.Used() {
			continue
		}
		e := s.Entry()
		if err := entryFits(s.Index, e, h, nh, last, t.DiskSize, ss); err != nil {
			return nil, err
		}
	}

	// The new headers.
	arrCRC := crc32.ChecksumIEEE(arr)
	nh.ArrayCRC = arrCRC
	pbase := src.HeaderRaw
	if t.Primary.Valid() {
		pbase = t.Primary.HeaderRaw
	}
	bbase := src.HeaderRaw
	if t.Backup.Valid() {
		bbase = t.Backup.HeaderRaw
	}
	ph := nh
	ph.MyLBA, ph.AlternateLBA, ph.EntryLBA = 1, backupLBA, primaryEntryLBA
	bh := nh
	bh.MyLBA, bh.AlternateLBA, bh.EntryLBA = backupLBA, 1, backupEntryLBA
	p.array = arr
	p.primaryHdr = headerSector(pbase, ph, ss)
	p.backupHdr = headerSector(bbase, bh, ss)
	p.backupLBA = backupLBA

	// The writes, sector by sector, only where something changes.
	padded := make([]byte, int(S)*ss)
	copy(padded, arr)
	var oldBackupArr, oldBackupHdr, oldPrimaryArr, oldPrimaryHdr []byte
	for _, b := range []*Copy{t.Backup, t.StrayBackup} {
		if b != nil && b.HeaderLBA == backupLBA {
			oldBackupHdr = b.HeaderRaw
			if b.Array != nil && b.Header.EntryLBA == backupEntryLBA {
				oldBackupArr = b.Array
			}
			break
		}
	}
	if pr := t.Primary; pr != nil {
		oldPrimaryHdr = pr.HeaderRaw
		if pr.Array != nil && pr.Header.EntryLBA == primaryEntryLBA {
			oldPrimaryArr = pr.Array
		}
	}
	p.addWrites("backup array", backupEntryLBA, padded, oldBackupArr)
	p.addWrites("backup header", backupLBA, p.backupHdr, oldBackupHdr)
	// The primary header goes before its array (the backup's after):
	// while the primary array is being rewritten, the primary header then
	// already carries the new array CRC, which the complete new backup
	// array matches. Every reader falls back to the backup in that window:
	// UEFI's rule (primary array CRC wrong -> use the backup) and also
	// sgdisk, which only trusts a backup array whose CRC matches the
	// primary header's; with the old header still in place it would see
	// two disagreeing tables and use neither.
	p.addWrites("primary header", 1, p.primaryHdr, oldPrimaryHdr)
	p.addWrites("primary array", primaryEntryLBA, padded, oldPrimaryArr)
	// Header fields a valid copy had wrong (beyond what the steps above
	// already change on purpose).
	if oldBackupLBA == backupLBA && !fromRef {
		for _, c := range []struct {
			name string
			old  *Copy
			at   uint64
			new  []byte
		}{{"primary", t.Primary, 1, p.primaryHdr}, {"backup", t.Backup, backupLBA, p.backupHdr}} {
			if c.old.Valid() && c.old.HeaderLBA == c.at {
				if d := headerFieldDiff(c.old.Header, ParseHeader(c.new), nh, h); len(d) > 0 {
					p.Steps = append(p.Steps, fmt.Sprintf("correct the %s header: %s", c.name, strings.Join(d, ", ")))
				}
			}
		}
	}
	m, pm := fixMBR(t)
	switch {
	case m != nil && pm.hybrid && pm.capBy >= 0:
		o := pm.others[pm.capBy]
		p.Steps = append(p.Steps, fmt.Sprintf("end the hybrid MBR's 0xEE record at LBA %d (was %d) so that it no longer overlaps MBR record %d (LBA %d-%d); the hybrid MBR's other records stay as they are",
			pm.want, pm.size, o.index+1, o.start, o.end()))
	case m != nil && pm.hybrid:
		p.Steps = append(p.Steps, fmt.Sprintf("end the hybrid MBR's 0xEE record at the disk's last LBA %d (was %d, past the end); its other records stay as they are", pm.want, pm.size))
	case m != nil:
		p.Steps = append(p.Steps, fmt.Sprintf("set the protective MBR's size to %d sectors (was %d)", pm.want, pm.size))
	case pm.hybrid && pm.off >= 0:
		p.Notes = append(p.Notes, fmt.Sprintf("the MBR is a hybrid MBR (0xEE record over LBA 1-%d and %d other record(s)): left as it is, not stretched over the whole disk",
			pm.size, len(pm.others)))
	}
	if m != nil {
		p.addWrites("protective MBR", 0, m, t.MBR)
	}

	if !p.Empty() {
		if arrCRC != h.ArrayCRC || !bytes.Equal(arr, src.Array) {
			p.Steps = append(p.Steps, "recompute the entry array CRC32 and both header CRC32s")
		} else {
			p.Steps = append(p.Steps, "recompute both header CRC32s")
		}
		if !hasCopyStep(p) && anyRegion(p, "primary") && anyRegion(p, "backup") {
			p.Steps = append(p.Steps, "write the backup GPT copy first, then the primary")
		}
	}
	if err := p.checkWrites(t); err != nil {
		return nil, err
	}
	return p, nil
}

// entryFits checks that entry slot (e) lies in the new usable range of
// nh. When it does not, the error says why: a bad entry (it ends before
// it starts, or lies outside the usable range of its own table h) or a
// disk too small for a partition that fitted the table it came from.
func entryFits(slot int, e Entry, h, nh Header, last uint64, size int64, ss int) error {
	if e.First >= nh.FirstUsableLBA && e.Last <= nh.LastUsableLBA && e.First <= e.Last {
		return nil
	}
	const refuse = "; refusing to change anything"
	switch {
	case e.Last < e.First:
		return fmt.Errorf("gpt: partition %d is a bad entry: it ends (LBA %d) before it starts (LBA %d); fix or delete it by hand%s", slot, e.Last, e.First, refuse)
	case e.First < h.FirstUsableLBA || e.Last > h.LastUsableLBA && e.Last <= last:
		return fmt.Errorf("gpt: partition %d (LBA %d-%d) is a bad entry: it lies outside its own table's usable range LBA %d-%d (this is not about the disk's size); fix it by hand%s",
			slot, e.First, e.Last, h.FirstUsableLBA, h.LastUsableLBA, refuse)
	case e.Last > last:
		return fmt.Errorf("gpt: partition %d (LBA %d-%d) runs past the end of this disk (last LBA %d): the disk (%s) is smaller than the table needs (%s)%s",
			slot, e.First, e.Last, last, HumanBytes(size), HumanBytes(int64(e.Last+1)*int64(ss)), refuse)
	}
	return fmt.Errorf("gpt: partition %d (LBA %d-%d) does not fit in this disk's usable range LBA %d-%d: the disk (%s) is too small for it and the backup GPT behind it%s",
		slot, e.First, e.Last, nh.FirstUsableLBA, nh.LastUsableLBA, HumanBytes(size), refuse)
}

// headerFieldDiff lists the fields that differ between an old and a new
// header, leaving out the CRCs and what the plan changes for the whole
// table on purpose (the fields where nh differs from the source h).
func headerFieldDiff(old, new, nh, h Header) []string {
	var d []string
	add := func(name string, o, n uint64, planned bool) {
		if o != n && !planned {
			d = append(d, fmt.Sprintf("%s %d -> %d", name, o, n))
		}
	}
	add("MyLBA", old.MyLBA, new.MyLBA, false)
	add("AlternateLBA", old.AlternateLBA, new.AlternateLBA, false)
	add("FirstUsableLBA", old.FirstUsableLBA, new.FirstUsableLBA, nh.FirstUsableLBA != h.FirstUsableLBA)
	add("LastUsableLBA", old.LastUsableLBA, new.LastUsableLBA, nh.LastUsableLBA != h.LastUsableLBA)
	add("PartitionEntryLBA", old.EntryLBA, new.EntryLBA, false)
	if old.DiskGUID != new.DiskGUID && nh.DiskGUID == h.DiskGUID {
		d = append(d, fmt.Sprintf("disk GUID %s -> %s", old.DiskGUID, new.DiskGUID))
	}
	if old.Revision != new.Revision || old.HeaderSize != new.HeaderSize || old.Reserved != new.Reserved {
		d = append(d, "revision/size/reserved fields")
	}
	return d
}

func hasCopyStep(p *Plan) bool {
	for _, s := range p.Steps {
		if strings.Contains(s, "GPT") {
			return true
		}
	}
	return false
}

func anyRegion(p *Plan, prefix string) bool {
	for _, w := range p.Writes {
		if strings.HasPrefix(w.Region, prefix) {
			return true
		}
	}
	return false
}

// madeFor returns the size of the disk t's table was made for, from where
// its backup header is (or the primary says it is); 0 when unknown.
func madeFor(t *Table) int64 {
	c := t.Best()
	if c == nil {
		return 0
	}
	last := c.Header.AlternateLBA
	if c.Which == "backup" {
		last = c.HeaderLBA
	}
	if last > 1<<50 {
		return 0
	}
	return int64(last+1) * int64(t.SectorSize)
}

func problemSummary(t *Table) string {
	var s []string
	for _, c := range []*Copy{t.Primary, t.Backup} {
		if c == nil {
			continue
		}
		for _, pr := range c.Problems {
			s = append(s, pr.String())
		}
	}
	for _, pr := range t.Problems {
		s = append(s, pr.String())
	}
	if len(s) == 0 {
		return "no GPT found"
	}
	if len(s) > 4 {
		s = append(s[:4], "...")
	}
	return strings.Join(s, "; ")
}

// headerSector returns a header sector: base's bytes (so anything after
// the defined fields is kept) with h's fields and a fresh header CRC.
func headerSector(base []byte, h Header, ss int) []byte {
	sec := make([]byte, ss)
	copy(sec, base)
	h.HeaderCRC = 0
	h.Put(sec)
	crc, ok := HeaderCRCOf(sec)
	if !ok { // cannot happen for a valid source header
		crc = 0
	}
	binary.LittleEndian.PutUint32(sec[0x10:], crc)
	return sec
}

// addWrites adds one Write per sector of data (written at lba) that
// differs from old. old may be nil or end inside a sector (an array that
// is not a whole number of sectors): such sectors get Old nil and are
// compared with the disk at apply time.
func (p *Plan) addWrites(region string, lba uint64, data, old []byte) {
	ss := p.SectorSize
	for i := 0; i*ss < len(data); i++ {
		nw := data[i*ss : (i+1)*ss]
		var ol []byte
		switch {
		case (i+1)*ss <= len(old):
			ol = old[i*ss : (i+1)*ss]
			if bytes.Equal(ol, nw) {
				continue
			}
			ol = bytes.Clone(ol)
		case i*ss < len(old):
			// The array ends inside this sector: when its part of the
			// sector is unchanged, the rest is not the plan's business.
			if bytes.Equal(old[i*ss:], nw[:len(old)-i*ss]) {
				continue
			}
		}
		at := lba + uint64(i)
		p.Writes = append(p.Writes, Write{Region: region, LBA: at, Offset: int64(at) * int64(ss), Old: ol, New: bytes.Clone(nw)})
	}
}

// checkWrites makes sure no write lands inside a partition of either the
// current or the new table, or outside the disk.
func (p *Plan) checkWrites(t *Table) error {
	type span struct{ first, last uint64 }
	var parts []span
	add := func(raw []byte, es int) {
		for _, s := range splitSlots(raw, es) {
			if s.Used() {
				e := s.Entry()
				parts = append(parts, span{e.First, e.Last})
			}
		}
	}
	if c := t.Best(); c != nil {
		add(c.Array, int(c.Header.EntrySize))
	}
	if len(p.array) > 0 {
		es := int(ParseHeader(p.primaryHdr).EntrySize)
		add(p.array, es)
	}
	for _, w := range p.Writes {
		if w.LBA > t.LastLBA() {
			return fmt.Errorf("gpt: internal error: planned write at LBA %d is past the disk end", w.LBA)
		}
		for _, s := range parts {
			if w.LBA >= s.first && w.LBA <= s.last {
				return fmt.Errorf("gpt: refusing: the %s would be written at LBA %d, inside a partition (LBA %d-%d)", w.Region, w.LBA, s.first, s.last)
			}
		}
	}
	return nil
}

// splitSlots splits a raw array into 1-based slots.
func splitSlots(arr []byte, es int) []Slot {
	if es <= 0 {
		return nil
	}
	out := make([]Slot, len(arr)/es)
	for i := range out {
		out[i] = Slot{Index: i + 1, Raw: arr[i*es : (i+1)*es]}
	}
	return out
}

// fixMBR returns the MBR sector with the protective record's size set for
// this disk (see protectiveMBR), or nil when it is right already or there
// is no protective record starting at LBA 1 to fix (that is left alone).
func fixMBR(t *Table) ([]byte, protective) {
	pm := protectiveMBR(t.MBR, t.LastLBA())
	if pm.off < 0 || pm.want == pm.size {
		return nil, pm
	}
	m := bytes.Clone(t.MBR)
	binary.LittleEndian.PutUint32(m[pm.off:], pm.want)
	return m, pm
}

// move is one partition moving from one slot to another.
type move struct{ from, to int }

// describeMoves renders moves as steps, grouping runs with the same shift:
// "move entries 5,6,7,8 from slots 4,5,6,7 back to slots 5,6,7,8".
func describeMoves(moves []move, why string) []string {
	sort.Slice(moves, func(i, j int) bool { return moves[i].from < moves[j].from })
	var out []string
	for i := 0; i < len(moves); {
		j := i + 1
		for j < len(moves) && moves[j].from == moves[j-1].from+1 && moves[j].to-moves[j].from == moves[i].to-moves[i].from {
			j++
		}
		var from, to []string
		for _, m := range moves[i:j] {
			from = append(from, fmt.Sprint(m.from))
			to = append(to, fmt.Sprint(m.to))
		}
		noun, snoun := "entries", "slots"
		if j-i == 1 {
			noun, snoun = "entry", "slot"
		}
		s := fmt.Sprintf("move %s %s from %s %s back to %s %s", noun, strings.Join(to, ","), snoun, strings.Join(from, ","), snoun, strings.Join(to, ","))
		if why != "" {
			s += " (" + why + ")"
		}
		out = append(out, s)
		i = j
	}
	return out
}

// remapSlots applies a current -> wanted slot map to arr.
func remapSlots(p *Plan, arr []byte, es int, m map[int]int, why string) ([]byte, error) {
	slots := splitSlots(arr, es)
	n := len(slots)
	dest := map[int]int{}
	var moves []move
	for from, to := range m {
		if from < 1 || from > n || to < 1 || to > n {
			return nil, fmt.Errorf("gpt: slot map %d -> %d is outside the table's %d slots", from, to, n)
		}
		if !slots[from-1].Used() {
			return nil, fmt.Errorf("gpt: slot map moves slot %d, which is empty", from)
		}
		if f, dup := dest[to]; dup {
			return nil, fmt.Errorf("gpt: slot map sends both slot %d and slot %d to slot %d", f, from, to)
		}
		dest[to] = from
		if from != to {
			moves = append(moves, move{from, to})
		}
	}
	if len(moves) == 0 {
		return arr, nil
	}
	out := bytes.Clone(arr)
	for _, s := range slots {
		_, mapped := m[s.Index]
		if s.Used() && !mapped {
			if f, taken := dest[s.Index]; taken {
				return nil, fmt.Errorf("gpt: slot map moves slot %d to slot %d, which holds a partition the map does not move", f, s.Index)
			}
		}
	}
	var zeroed []string
	for _, mv := range moves {
		if _, refilled := dest[mv.from]; !refilled {
			clear(out[(mv.from-1)*es : mv.from*es])
			zeroed = append(zeroed, fmt.Sprint(mv.from))
		}
	}
	for _, mv := range moves {
		copy(out[(mv.to-1)*es:mv.to*es], slots[mv.from-1].Raw)
	}
	p.Steps = append(p.Steps, describeMoves(moves, why)...)
	if len(zeroed) > 0 {
		sort.Slice(zeroed, func(i, j int) bool {
			return len(zeroed[i]) < len(zeroed[j]) || len(zeroed[i]) == len(zeroed[j]) && zeroed[i] < zeroed[j]
		})
		p.Steps = append(p.Steps, fmt.Sprintf("zero slot%s %s (left empty)", plural(len(zeroed)), strings.Join(zeroed, ",")))
	}
	return out, nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// remapFromRef puts every partition of arr at the slot it has in ref.
func remapFromRef(p *Plan, arr []byte, h Header, ref *Table) ([]byte, error) {
	rc := ref.Best()
	if rc == nil {
		return nil, fmt.Errorf("gpt: the reference has no usable GPT (%s)", problemSummary(ref))
	}
	if rc.Header.EntrySize != h.EntrySize || rc.Header.NumEntries != h.NumEntries {
		return nil, fmt.Errorf("gpt: the reference has %d entries of %d bytes, this disk %d of %d; the slot layout cannot be copied",
			rc.Header.NumEntries, rc.Header.EntrySize, h.NumEntries, h.EntrySize)
	}
	es := int(h.EntrySize)
	cur := splitSlots(arr, es)
	refs := splitSlots(rc.Array, es)
	n := len(cur)

	guidCount := func(slots []Slot) map[GUID]int {
		c := map[GUID]int{}
		for _, s := range slots {
			if s.Used() {
				c[s.Entry().Unique]++
			}
		}
		return c
	}
	curG, refG := guidCount(cur), guidCount(refs)
	refByGUID := map[GUID]int{}
	type key struct {
		t           GUID
		first, last uint64
	}
	refByPos := map[key][]int{}
	for _, s := range refs {
		if !s.Used() {
			continue
		}
		e := s.Entry()
		refByGUID[e.Unique] = s.Index
		refByPos[key{e.Type, e.First, e.Last}] = append(refByPos[key{e.Type, e.First, e.Last}], s.Index)
	}

	target := map[int]int{} // ref slot -> current slot
	full := map[int]bool{}  // current slot matched in full
	var moves []move
	var unmatched []int
	var restored []string
	for _, s := range cur {
		if !s.Used() {
			continue
		}
		e := s.Entry()
		j := 0
		if curG[e.Unique] == 1 && refG[e.Unique] == 1 {
			j = refByGUID[e.Unique]
		}
		if j == 0 {
			if c := refByPos[key{e.Type, e.First, e.Last}]; len(c) == 1 {
				j = c[0]
				p.Notes = append(p.Notes, fmt.Sprintf("partition in slot %d matched reference entry %d by type and position only (its unique GUID %s differs from the reference's); the disk's GUID is kept", s.Index, j, e.Unique))
			}
		}
		if j == 0 {
			unmatched = append(unmatched, s.Index)
			continue
		}
		if other, dup := target[j]; dup {
			return nil, fmt.Errorf("gpt: partitions in slots %d and %d both match reference entry %d; cannot decide which goes there", other, s.Index, j)
		}
		target[j] = s.Index
		re := refs[j-1].Entry()
		if re.Unique == e.Unique && re.Type == e.Type && re.First == e.First && re.Last == e.Last {
			full[s.Index] = true
			if !bytes.Equal(refs[j-1].Raw, s.Raw) {
				restored = append(restored, fmt.Sprint(j))
			}
		} else if re.Unique == e.Unique {
			p.Notes = append(p.Notes, fmt.Sprintf("partition %d differs from the reference (disk: type %s LBA %d-%d; reference: type %s LBA %d-%d); the disk's entry is kept, at slot %d",
				j, e.Type, e.First, e.Last, re.Type, re.First, re.Last, j))
		}
		if j != s.Index {
			moves = append(moves, move{s.Index, j})
		}
	}
	for _, i := range unmatched {
		if c, taken := target[i]; taken {
			return nil, fmt.Errorf("gpt: the partition in slot %d is not in the reference, and slot %d is where the reference puts the partition now in slot %d; cannot decide", i, i, c)
		}
		p.Notes = append(p.Notes, fmt.Sprintf("the partition in slot %d is not in the reference; it stays in slot %d", i, i))
	}
	unmatchedSet := map[int]bool{}
	for _, i := range unmatched {
		unmatchedSet[i] = true
	}
	m := &RefMatch{Matched: len(target), Disk: len(target) + len(unmatched)}
	for _, s := range refs {
		if s.Used() {
			m.Ref++
			if _, found := target[s.Index]; !found {
				e := s.Entry()
				keep := "is left empty"
				if unmatchedSet[s.Index] {
					keep = "keeps this disk's own partition (see above)"
				}
				p.Notes = append(p.Notes, fmt.Sprintf("reference entry %d (type %s, LBA %d-%d) is not on this disk; slot %d %s", s.Index, e.Type, e.First, e.Last, s.Index, keep))
			}
		}
	}
	if m.Matched == 0 && (m.Disk > 0 || m.Ref > 0) {
		return nil, fmt.Errorf("gpt: %w: none of its %d partition(s) is on this disk and none of the disk's %d is in it (compared by unique GUID, then by type and position); is it the reference of another disk?",
			ErrNoCommonPartition, m.Ref, m.Disk)
	}
	p.RefMatch = m
	if m.Partial() {
		p.Notes = append([]string{fmt.Sprintf("the reference matches only part of this disk: %s", m)}, p.Notes...)
	}

	out := make([]byte, len(arr))
	var zeroed, junk []string
	for k := 1; k <= n; k++ {
		dst := out[(k-1)*es : k*es]
		switch c, ok := target[k]; {
		case ok && full[c]:
			copy(dst, refs[k-1].Raw)
		case ok:
			copy(dst, cur[c-1].Raw)
		case unmatchedSet[k]:
			copy(dst, cur[k-1].Raw)
		case !refs[k-1].Used():
			copy(dst, refs[k-1].Raw)
		}
		if _, ok := target[k]; !ok && !unmatchedSet[k] && !bytes.Equal(dst, cur[k-1].Raw) {
			if isZero(dst) {
				zeroed = append(zeroed, fmt.Sprint(k))
			} else {
				junk = append(junk, fmt.Sprint(k))
			}
		}
	}
	p.Steps = append(p.Steps, describeMoves(moves, "as in the reference")...)
	if len(zeroed) > 0 {
		p.Steps = append(p.Steps, fmt.Sprintf("zero slot%s %s (empty in the reference)", plural(len(zeroed)), shortList(zeroed)))
	}
	if len(junk) > 0 {
		p.Steps = append(p.Steps, fmt.Sprintf("restore the bytes of unused slot%s %s exactly as in the reference", plural(len(junk)), shortList(junk)))
	}
	if len(restored) > 0 {
		p.Steps = append(p.Steps, fmt.Sprintf("restore entr%s %s byte for byte from the reference (name, attributes or bytes after the name differ)", map[bool]string{true: "y", false: "ies"}[len(restored) == 1], strings.Join(restored, ",")))
	}
	return out, nil
}

func shortList(s []string) string {
	if len(s) > 12 {
		return strings.Join(s[:12], ",") + fmt.Sprintf(",... (%d slots)", len(s))
	}
	return strings.Join(s, ",")
}

// growSlot extends the partition in slot to lastUsable.
func growSlot(p *Plan, arr []byte, es, slot int, lastUsable uint64) error {
	slots := splitSlots(arr, es)
	if slot < 1 || slot > len(slots) || !slots[slot-1].Used() {
		return fmt.Errorf("gpt: cannot grow partition %d: there is no partition in slot %d", slot, slot)
	}
	e := slots[slot-1].Entry()
	for _, s := range slots {
		if s.Used() && s.Index != slot {
			if o := s.Entry(); o.First > e.Last && o.First <= lastUsable {
				return fmt.Errorf("gpt: cannot grow partition %d (LBA %d-%d): partition %d (LBA %d-%d) lies after it", slot, e.First, e.Last, s.Index, o.First, o.Last)
			}
		}
	}
	switch {
	case e.Last == lastUsable:
		p.Notes = append(p.Notes, fmt.Sprintf("partition %d already reaches the end of the usable space (LBA %d)", slot, lastUsable))
	case e.Last > lastUsable:
		return fmt.Errorf("gpt: partition %d ends at LBA %d, past the last usable LBA %d", slot, e.Last, lastUsable)
	default:
		binary.LittleEndian.PutUint64(slots[slot-1].Raw[40:], lastUsable)
		p.Steps = append(p.Steps, fmt.Sprintf("grow partition %d from %s to %s (last LBA %d, was %d); its file system must be grown separately",
			slot, HumanBytes(int64(e.Sectors())*int64(p.SectorSize)), HumanBytes(int64(lastUsable-e.First+1)*int64(p.SectorSize)), lastUsable, e.Last))
	}
	return nil
}

// ReadOld fills in the old bytes of the writes PlanFix could not know
// from the table (e.g. where a relocated backup goes) by reading them from
// r, the disk the plan is for, and drops the writes whose sector already
// holds the new bytes. Afterwards every Write has its exact old and new
// bytes, and Apply refuses to run if any of them changed meanwhile.
func (p *Plan) ReadOld(r io.ReaderAt) error {
	out := p.Writes[:0]
	for _, w := range p.Writes {
		if w.Old == nil {
			b := make([]byte, len(w.New))
			n, err := r.ReadAt(b, w.Offset)
			if n != len(b) {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("gpt: reading the %s at LBA %d: %w", w.Region, w.LBA, err)
			}
			if bytes.Equal(b, w.New) {
				continue
			}
			w.Old = b
		}
		out = append(out, w)
	}
	p.Writes = out
	return nil
}

// Slots returns the entry array as it is after the plan (the current one
// when the plan is empty), one Slot per entry, 1-based.
func (p *Plan) Slots() []Slot {
	if len(p.primaryHdr) == 0 {
		return nil
	}
	return splitSlots(p.array, int(ParseHeader(p.primaryHdr).EntrySize))
}

// BackupLBA returns where the plan puts the backup GPT header.
func (p *Plan) BackupLBA() uint64 { return p.backupLBA }
