package gpt

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Layout classifications of how the partitions of a reference ended up in
// other slots of a target (Diff.Layout).
const (
	LayoutSame       = "same"       // every partition at its reference slot
	LayoutCompacted  = "compacted"  // gaps closed, relative order kept
	LayoutSorted     = "sorted"     // slots reassigned in order of start sector
	LayoutReordered  = "reordered"  // the same slots, another permutation
	LayoutRenumbered = "renumbered" // anything else
)

// EntryInfo is the decoded view of a used slot, for reports.
type EntryInfo struct {
	Slot     int    `json:"slot"`
	Type     string `json:"type"`      // GUID text
	TypeName string `json:"type_name"` // e.g. "Basic Data"
	Unique   string `json:"unique"`
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
	Sectors  uint64 `json:"sectors"`
	Bytes    int64  `json:"bytes"`
	Attrs    uint64 `json:"attrs"`
	Name     string `json:"name"`
}

func entryInfo(s Slot, sectorSize int) *EntryInfo {
	if !s.Used() {
		return nil
	}
	e := s.Entry()
	return &EntryInfo{Slot: s.Index, Type: e.Type.String(), TypeName: TypeName(e.Type), Unique: e.Unique.String(),
		First: e.First, Last: e.Last, Sectors: e.Sectors(), Bytes: int64(e.Sectors()) * int64(sectorSize), Attrs: e.Attrs, Name: e.Name}
}

// SlotRow is one slot of both tables side by side (nil = unused).
type SlotRow struct {
	Slot   int        `json:"slot"`
	Ref    *EntryInfo `json:"ref"`
	Target *EntryInfo `json:"target"`
	// Note says what happened to the slot in plain words, e.g. "moved to
	// slot 4", "was slot 5", "changed: last sector", "" when unchanged.
	Note string `json:"note,omitempty"`
}

// Move is a partition found at another slot: From in the reference, To in
// the target.
type Move struct {
	From int `json:"from"`
	To   int `json:"to"`
}

// FieldChange is one field of a matched partition that differs.
type FieldChange struct {
	Field  string `json:"field"` // type, unique, first, last, attrs, name, name-tail
	Ref    string `json:"ref"`
	Target string `json:"target"`
}

// EntryChange is a partition present in both tables (matched by unique
// GUID, or by type and position) whose entry differs.
type EntryChange struct {
	RefSlot    int           `json:"ref_slot"`
	TargetSlot int           `json:"target_slot"`
	Fields     []FieldChange `json:"fields"`
}

// HeaderChange is a header field that differs between the tables.
// Expected is set for differences that a restore onto a disk of another
// size causes by itself (backup location, AlternateLBA, LastUsableLBA
// grown); they do not make the tables different.
type HeaderChange struct {
	Field    string `json:"field"`
	Ref      string `json:"ref"`
	Target   string `json:"target"`
	Expected bool   `json:"expected"`
}

// Diff is the slot-by-slot comparison of a target table with a reference.
type Diff struct {
	// Identical: both entry arrays are byte for byte the same.
	Identical bool `json:"identical"`
	// Layout classifies where the reference partitions are in the target
	// (LayoutSame when every matched partition is at its slot).
	Layout string `json:"layout"`
	// Mapping maps every matched partition's reference slot to its
	// target slot; Moves lists those that differ, by reference slot.
	Mapping map[int]int `json:"mapping"`
	Moves   []Move      `json:"moves,omitempty"`
	// MatchedByPosition lists reference slots matched by type and LBAs
	// because their unique GUIDs differ (regenerated).
	MatchedByPosition []int         `json:"matched_by_position,omitempty"`
	Added             []int         `json:"added,omitempty"`   // target slots with partitions not in the reference
	Removed           []int         `json:"removed,omitempty"` // reference slots whose partition is not in the target
	Changed           []EntryChange `json:"changed,omitempty"`
	// UnusedDiffer lists unused slots whose raw bytes differ (junk left by
	// some tool); harmless, reported for completeness.
	UnusedDiffer []int          `json:"unused_differ,omitempty"`
	Header       []HeaderChange `json:"header,omitempty"`
	// RefFindings and Findings are the problems of the reference and the
	// target tables (checksums, backup location, protective MBR).
	RefFindings []Problem `json:"ref_findings,omitempty"`
	Findings    []Problem `json:"findings,omitempty"`
	// TargetDamaged: the target has no usable GPT, or its copies are
	// damaged or disagree.
	TargetDamaged bool      `json:"target_damaged"`
	Slots         []SlotRow `json:"slots"`
	// Verdict sums the comparison up in plain words for a sysadmin.
	Verdict string `json:"verdict"`
}

// Same reports whether the target has every partition of the reference at
// the same slot with the same entry, no header difference that matters,
// and no damaged GPT copy. Junk in unused slots and the differences a
// restore onto a bigger disk causes do not count.
func (d *Diff) Same() bool {
	if d.TargetDamaged || d.Layout != LayoutSame || len(d.Added)+len(d.Removed)+len(d.Changed) > 0 {
		return false
	}
	for _, h := range d.Header {
		if !h.Expected {
			return false
		}
	}
	return true
}

// damageCodes are the target findings that make it differ from any
// reference: a GPT copy that cannot be used or two that disagree.
var damageCodes = map[string]bool{
	CodePrimaryMissing: true, CodePrimaryInvalid: true, CodeBackupMissing: true, CodeBackupInvalid: true,
	CodeArraysDiffer: true, CodeHeadersDiffer: true, CodeOverlap: true, CodeEntryRange: true, CodeDupGUID: true,
}

func allProblems(t *Table) []Problem {
	var ps []Problem
	for _, c := range []*Copy{t.Primary, t.Backup} {
		if c != nil {
			ps = append(ps, c.Problems...)
		}
	}
	return append(ps, t.Problems...)
}

// Compare compares target with the reference ref slot by slot. Partitions
// are matched by unique GUID, then by (type, first LBA, last LBA) for
// those whose GUIDs were regenerated, then by LBAs alone, then by slot.
func Compare(ref, target *Table) *Diff {
	d := &Diff{Mapping: map[int]int{}, RefFindings: allProblems(ref), Findings: allProblems(target)}
	for _, p := range d.Findings {
		if damageCodes[p.Code] {
			d.TargetDamaged = true
		}
	}
	rs, ts := ref.Slots(), target.Slots()
	if ts == nil {
		d.TargetDamaged = true
	}
	rb, tb := ref.Best(), target.Best()
	d.Identical = rb != nil && tb != nil && bytes.Equal(rb.Array, tb.Array)

	used := func(ss []Slot) map[int]Entry {
		m := map[int]Entry{}
		for _, s := range ss {
			if s.Used() {
				m[s.Index] = s.Entry()
			}
		}
		return m
	}
	ru, tu := used(rs), used(ts)
	taken := map[int]bool{} // target slots matched
	match := func(key func(Entry) (string, bool), byPos bool) {
		tIdx := map[string][]int{}
		for _, i := range sortedKeys(tu) {
			if k, ok := key(tu[i]); ok && !taken[i] {
				tIdx[k] = append(tIdx[k], i)
			}
		}
		rIdx := map[string][]int{}
		for _, i := range sortedKeys(ru) {
			if _, done := d.Mapping[i]; done {
				continue
			}
			if k, ok := key(ru[i]); ok {
				rIdx[k] = append(rIdx[k], i)
			}
		}
		for k, ris := range rIdx {
			tis := tIdx[k]
			if len(ris) != 1 || len(tis) != 1 { // ambiguous: leave to later passes
				continue
			}
			d.Mapping[ris[0]] = tis[0]
			taken[tis[0]] = true
			if byPos {
				d.MatchedByPosition = append(d.MatchedByPosition, ris[0])
			}
		}
	}
	match(func(e Entry) (string, bool) { return string(e.Unique[:]), !e.Unique.IsZero() }, false)
	match(func(e Entry) (string, bool) { return fmt.Sprint(e.Type, e.First, e.Last), true }, true)
	match(func(e Entry) (string, bool) { return fmt.Sprint(e.First, e.Last), true }, true)
	// Last resort: the same slot on both sides, both unmatched.
	for _, i := range sortedKeys(ru) {
		if _, done := d.Mapping[i]; !done {
			if _, ok := tu[i]; ok && !taken[i] {
				d.Mapping[i] = i
				taken[i] = true
			}
		}
	}
	sort.Ints(d.MatchedByPosition)
	for _, i := range sortedKeys(ru) {
		j, ok := d.Mapping[i]
		if !ok {
			d.Removed = append(d.Removed, i)
			continue
		}
		if i != j {
			d.Moves = append(d.Moves, Move{i, j})
		}
		if f := entryFields(rs[i-1], ts[j-1]); len(f) > 0 {
			d.Changed = append(d.Changed, EntryChange{RefSlot: i, TargetSlot: j, Fields: f})
		}
	}
	for _, j := range sortedKeys(tu) {
		if !taken[j] {
			d.Added = append(d.Added, j)
		}
	}
	for i := 0; i < len(rs) && i < len(ts); i++ {
		if !rs[i].Used() && !ts[i].Used() && !bytes.Equal(rs[i].Raw, ts[i].Raw) {
			d.UnusedDiffer = append(d.UnusedDiffer, i+1)
		}
	}
	d.Layout = classify(d.Mapping, ru, tu)
	d.Header = headerChanges(ref, target)
	d.Slots = slotRows(d, rs, ts, ref.SectorSize, target.SectorSize)
	d.Verdict = verdict(d, ref, target)
	return d
}

func sortedKeys[V any](m map[int]V) []int {
	k := make([]int, 0, len(m))
	for i := range m {
		k = append(k, i)
	}
	sort.Ints(k)
	return k
}

// entryFields lists the fields that differ between two entries.
func entryFields(r, t Slot) []FieldChange {
	if bytes.Equal(r.Raw, t.Raw) {
		return nil
	}
	re, te := r.Entry(), t.Entry()
	var f []FieldChange
	add := func(field string, a, b any) { f = append(f, FieldChange{field, fmt.Sprint(a), fmt.Sprint(b)}) }
	if re.Type != te.Type {
		add("type", TypeName(re.Type), TypeName(te.Type))
	}
	if re.Unique != te.Unique {
		add("unique", re.Unique, te.Unique)
	}
	if re.First != te.First {
		add("first", re.First, te.First)
	}
	if re.Last != te.Last {
		add("last", re.Last, te.Last)
	}
	if re.Attrs != te.Attrs {
		add("attrs", fmt.Sprintf("%016X", re.Attrs), fmt.Sprintf("%016X", te.Attrs))
	}
	if re.Name != te.Name {
		add("name", fmt.Sprintf("%q", re.Name), fmt.Sprintf("%q", te.Name))
	}
	if len(f) == 0 { // only bytes after the name's NUL (or beyond 128) differ
		add("name-tail", fmt.Sprintf("%x", tail(r.Raw)), fmt.Sprintf("%x", tail(t.Raw)))
	}
	return f
}

// tail returns the raw bytes after the name's terminating NUL.
func tail(raw []byte) []byte {
	for i := 56; i+1 < 56+EntryNameBytes && i+1 < len(raw); i += 2 {
		if raw[i] == 0 && raw[i+1] == 0 {
			return raw[i+2:]
		}
	}
	if len(raw) > 56+EntryNameBytes {
		return raw[56+EntryNameBytes:]
	}
	return nil
}

// classify names how the matched partitions moved.
func classify(m map[int]int, ru, tu map[int]Entry) string {
	refSlots := sortedKeys(m)
	moved := false
	for _, i := range refSlots {
		if m[i] != i {
			moved = true
		}
	}
	if !moved {
		return LayoutSame
	}
	var to []int
	for _, i := range refSlots {
		to = append(to, m[i])
	}
	orderKept := sort.IntsAreSorted(to)
	// Target slots of the matched partitions in target slot order, and
	// whether their starts increase: the target was sorted by start.
	tslots := append([]int(nil), to...)
	sort.Ints(tslots)
	sortedByStart := true
	for k := 1; k < len(tslots); k++ {
		if tu[tslots[k]].First < tu[tslots[k-1]].First {
			sortedByStart = false
		}
	}
	refSortedByStart := true
	for k := 1; k < len(refSlots); k++ {
		if ru[refSlots[k]].First < ru[refSlots[k-1]].First {
			refSortedByStart = false
		}
	}
	// compacted: order kept, every move toward slot 1, and the target's
	// used slots have no gap left.
	if orderKept {
		down := true
		for _, i := range refSlots {
			if m[i] > i {
				down = false
			}
		}
		tused := sortedKeys(tu)
		noGap := len(tused) > 0 && tused[len(tused)-1] == len(tused)
		if down && noGap {
			return LayoutCompacted
		}
		return LayoutRenumbered
	}
	if sortedByStart && !refSortedByStart {
		return LayoutSorted
	}
	if slices.Equal(refSlots, tslots) {
		return LayoutReordered
	}
	return LayoutRenumbered
}

// headerChanges compares the header fields that describe the layout.
func headerChanges(ref, target *Table) []HeaderChange {
	var hc []HeaderChange
	add := func(field string, a, b any, expected bool) {
		hc = append(hc, HeaderChange{field, fmt.Sprint(a), fmt.Sprint(b), expected})
	}
	if ref.SectorSize != target.SectorSize {
		add("sector size", ref.SectorSize, target.SectorSize, false)
	}
	rb, tb := ref.Best(), target.Best()
	if rb == nil || tb == nil {
		return hc
	}
	// Compare the primary-side view: a backup header used in place of a
	// damaged primary mirrors MyLBA/AlternateLBA/EntryLBA, so those are
	// only compared between two primaries.
	r, t := rb.Header, tb.Header
	if ref.DiskSize != target.DiskSize && ref.DiskSize > 0 {
		// Bigger is what a restore onto a larger disk gives; smaller
		// cuts partitions off.
		add("disk size", fmt.Sprintf("%d (%s)", ref.DiskSize, HumanBytes(ref.DiskSize)),
			fmt.Sprintf("%d (%s)", target.DiskSize, HumanBytes(target.DiskSize)), target.DiskSize > ref.DiskSize)
	}
	if r.Revision != t.Revision {
		add("revision", fmt.Sprintf("%08X", r.Revision), fmt.Sprintf("%08X", t.Revision), false)
	}
	if r.HeaderSize != t.HeaderSize {
		add("header size", r.HeaderSize, t.HeaderSize, false)
	}
	if r.DiskGUID != t.DiskGUID {
		add("disk GUID", r.DiskGUID, t.DiskGUID, false)
	}
	if r.FirstUsableLBA != t.FirstUsableLBA {
		add("first usable LBA", r.FirstUsableLBA, t.FirstUsableLBA, false)
	}
	if r.LastUsableLBA != t.LastUsableLBA {
		// Grown with the disk is expected; shrunk is not.
		add("last usable LBA", r.LastUsableLBA, t.LastUsableLBA, t.LastUsableLBA > r.LastUsableLBA)
	}
	if r.NumEntries != t.NumEntries {
		add("entry count", r.NumEntries, t.NumEntries, false)
	}
	if r.EntrySize != t.EntrySize {
		add("entry size", r.EntrySize, t.EntrySize, false)
	}
	if rb.Which == "primary" && tb.Which == "primary" {
		if r.EntryLBA != t.EntryLBA {
			add("entry array LBA", r.EntryLBA, t.EntryLBA, false)
		}
		if r.AlternateLBA != t.AlternateLBA {
			add("backup header LBA (AlternateLBA)", r.AlternateLBA, t.AlternateLBA, true)
		}
	}
	if ref.Backup != nil && target.Backup != nil && ref.Backup.HeaderLBA != target.Backup.HeaderLBA {
		add("backup GPT location", ref.Backup.HeaderLBA, target.Backup.HeaderLBA, true)
	}
	return hc
}

// slotRows lays out both tables side by side up to the last slot used in
// either.
func slotRows(d *Diff, rs, ts []Slot, rss, tss int) []SlotRow {
	n := 0
	for _, ss := range [][]Slot{rs, ts} {
		for _, s := range ss {
			if s.Used() && s.Index > n {
				n = s.Index
			}
		}
	}
	inv := map[int]int{}
	for r, t := range d.Mapping {
		inv[t] = r
	}
	changed := map[int]EntryChange{}
	for _, c := range d.Changed {
		changed[c.RefSlot] = c
	}
	rows := make([]SlotRow, n)
	for i := range rows {
		row := SlotRow{Slot: i + 1}
		if i < len(rs) {
			row.Ref = entryInfo(rs[i], rss)
		}
		if i < len(ts) {
			row.Target = entryInfo(ts[i], tss)
		}
		// Notes speak of the target's entry in this slot; for an empty
		// target slot, of where the reference's partition went.
		var notes []string
		if row.Ref != nil && row.Target == nil {
			if to, ok := d.Mapping[i+1]; !ok {
				notes = append(notes, "missing in target")
			} else {
				notes = append(notes, fmt.Sprintf("now in slot %d", to))
			}
		}
		if row.Target != nil {
			if from, ok := inv[i+1]; !ok {
				notes = append(notes, "not in reference")
			} else if from != i+1 {
				notes = append(notes, fmt.Sprintf("was slot %d", from))
			}
			if c, ok := changed[inv[i+1]]; ok && inv[i+1] != 0 {
				var f []string
				for _, x := range c.Fields {
					f = append(f, fieldName(x.Field))
				}
				notes = append(notes, "changed: "+strings.Join(f, ", "))
			}
		}
		row.Note = strings.Join(notes, "; ")
		rows[i] = row
	}
	return rows
}

func fieldName(f string) string {
	switch f {
	case "unique":
		return "unique GUID"
	case "first":
		return "start sector"
	case "last":
		return "end sector"
	case "attrs":
		return "attributes"
	case "name-tail":
		return "bytes after the name"
	}
	return f
}

func joinInts(s []int) string {
	var b []string
	for _, i := range s {
		b = append(b, fmt.Sprint(i))
	}
	return strings.Join(b, ",")
}

// verdict builds the plain-words summary.
func verdict(d *Diff, ref, target *Table) string {
	var s []string
	if target.Slots() == nil {
		return "the target has no readable GPT: neither the primary nor the backup partition table can be used"
	}
	if ref.Slots() == nil {
		return "the reference has no readable GPT: neither the primary nor the backup partition table can be used"
	}
	if len(d.Moves) > 0 {
		var from []int
		delta := d.Moves[0].To - d.Moves[0].From
		for _, m := range d.Moves {
			from = append(from, m.From)
			if m.To-m.From != delta {
				delta = 0
			}
		}
		var moved string
		switch {
		case delta == -1:
			moved = fmt.Sprintf("entries %s moved up one slot", joinInts(from))
		case delta < 0:
			moved = fmt.Sprintf("entries %s moved up %d slots", joinInts(from), -delta)
		case delta == 1:
			moved = fmt.Sprintf("entries %s moved down one slot", joinInts(from))
		case delta > 0:
			moved = fmt.Sprintf("entries %s moved down %d slots", joinInts(from), delta)
		default:
			var p []string
			for _, m := range d.Moves {
				p = append(p, fmt.Sprintf("%d->%d", m.From, m.To))
			}
			moved = "partitions moved to other slots (" + strings.Join(p, ", ") + ")"
		}
		if len(d.Moves) == 1 {
			moved = strings.Replace(moved, "entries", "entry", 1)
		}
		switch d.Layout {
		case LayoutCompacted:
			moved += ": the entry array was compacted (the empty slot was closed up)"
		case LayoutSorted:
			moved += ": the entries were sorted by start sector"
		case LayoutReordered:
			moved += ": the entries were reordered"
		case LayoutRenumbered:
			moved += ": the partitions were renumbered"
		}
		if len(d.Changed)+len(d.Removed)+len(d.Added) == 0 {
			moved += "; the partitions themselves are unchanged, only their numbers (/dev/sdaN, ESXi's partition numbers) changed"
		} else {
			moved += "; partition numbers (/dev/sdaN, ESXi's partition numbers) changed"
		}
		s = append(s, moved)
	}
	for _, i := range d.Removed {
		s = append(s, fmt.Sprintf("partition %d (%s) is missing from the target", i, describe(ref.Slots()[i-1], ref.SectorSize)))
	}
	for _, j := range d.Added {
		s = append(s, fmt.Sprintf("the target has a partition %d (%s) the reference does not have", j, describe(target.Slots()[j-1], target.SectorSize)))
	}
	var regen []int // only the unique GUID changed
	for _, c := range d.Changed {
		if len(c.Fields) == 1 && c.Fields[0].Field == "unique" {
			regen = append(regen, c.RefSlot)
			continue
		}
		var f []string
		for _, x := range c.Fields {
			switch x.Field {
			case "name-tail":
				f = append(f, "the bytes after its name differ (leftover data, ignored by most tools)")
			case "unique":
				f = append(f, "unique GUID differs")
			default:
				f = append(f, fmt.Sprintf("%s %s -> %s", fieldName(x.Field), x.Ref, x.Target))
			}
		}
		s = append(s, fmt.Sprintf("partition %d changed: %s", c.RefSlot, strings.Join(f, "; ")))
	}
	if len(regen) == 1 {
		s = append(s, fmt.Sprintf("partition %d has a new unique GUID", regen[0]))
	} else if len(regen) > 1 {
		s = append(s, fmt.Sprintf("partitions %s have new unique GUIDs (regenerated; matched by type and position)", joinInts(regen)))
	}
	for _, h := range d.Header {
		switch {
		case h.Expected:
		case h.Field == "disk size":
			s = append(s, fmt.Sprintf("the target disk (%s) is smaller than the reference (%s)", HumanBytes(target.DiskSize), HumanBytes(ref.DiskSize)))
		default:
			s = append(s, fmt.Sprintf("the %s differs (%s in the reference, %s in the target)", h.Field, h.Ref, h.Target))
		}
	}
	if esxiBanksAffected(d, ref) {
		s = append(s, "if this is an ESXi boot disk: ESXi looks for its boot banks at entries 5 and 6 and will not boot correctly")
	}
	if d.TargetDamaged {
		var f []string
		for _, p := range d.Findings {
			if damageCodes[p.Code] {
				f = append(f, p.String())
			}
		}
		damaged := "the target's GPT is damaged (" + strings.Join(f, "; ") + ")"
		switch {
		case !target.Primary.Valid() && target.Backup.Valid():
			damaged += "; its backup copy is intact and was used for this comparison, but firmware and boot loaders read the primary"
		case target.Primary.Valid() && !target.Backup.Valid():
			damaged += "; its primary copy is usable and was used for this comparison"
		}
		s = append(s, damaged)
	}
	if len(s) == 0 {
		v := "the partition tables match slot for slot"
		var exp []string
		for _, h := range d.Header {
			if h.Expected && h.Field != "disk size" {
				exp = append(exp, h.Field)
			}
		}
		if len(exp) > 0 {
			v += "; only what a disk of another size changes differs (" + strings.Join(exp, ", ") + ")"
		}
		for _, p := range d.Findings {
			if p.Code == CodeBackupNotAtEnd {
				v += "; but the backup GPT is not at the end of the disk (the table was made for a smaller disk; gptfix moves it)"
			}
		}
		if len(d.UnusedDiffer) > 0 {
			v += "; unused slots " + joinInts(d.UnusedDiffer) + " hold different leftover bytes (harmless)"
		}
		return v
	}
	v := strings.Join(s, "; ")
	return v
}

// esxiBanksAffected: the reference has Basic Data partitions at slots 5
// and 6 (where ESXi keeps its boot banks) and either of them is not at its
// slot in the target, or changed.
func esxiBanksAffected(d *Diff, ref *Table) bool {
	rs := ref.Slots()
	if len(rs) < 6 {
		return false
	}
	bd := MustParseGUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
	for _, i := range []int{5, 6} {
		if !rs[i-1].Used() || rs[i-1].Entry().Type != bd {
			return false
		}
	}
	for _, i := range []int{5, 6} {
		if to, ok := d.Mapping[i]; !ok || to != i {
			return true
		}
		for _, c := range d.Changed {
			for _, f := range c.Fields {
				if c.RefSlot == i && (f.Field == "type" || f.Field == "first" || f.Field == "last") {
					return true
				}
			}
		}
	}
	return false
}

func describe(s Slot, sectorSize int) string {
	e := s.Entry()
	return fmt.Sprintf("%s, sectors %d-%d, %s", TypeName(e.Type), e.First, e.Last, HumanBytes(int64(e.Sectors())*int64(sectorSize)))
}
