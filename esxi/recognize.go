package esxi

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/esxi-rescue/rescue/gpt"
)

// How sure Recognize is.
const (
	// ConfidenceExact: every partition has exactly the boundaries the
	// family's installer writes, except that the last one may end
	// anywhere when the installer gives it the rest of the disk.
	ConfidenceExact = "exact"
	// ConfidenceStructural: the partition types and their physical order
	// are the family's, but some sizes differ from what the installer
	// writes. Only for ESXi 7, whose sizes depend on the medium; 5.x and
	// 6.x layouts must match exactly (except where the last partition,
	// which gets the rest of the disk, ends).
	ConfidenceStructural = "structural"
)

// Match is an ESXi layout recognised on a table without a reference.
type Match struct {
	Family     string        `json:"family"`     // "5.x", "6.x", "7.x", or "5.x or 6.x" when both fit identically
	Confidence string        `json:"confidence"` // ConfidenceExact or ConfidenceStructural
	SlotMap    map[int]int   `json:"slot_map"`   // current slot -> canonical slot, for every used entry
	Parts      []MatchedPart `json:"parts"`
	Text       string        `json:"text"` // plain-words explanation for a sysadmin
}

// MatchedPart is one partition of the disk and what it is in the layout.
type MatchedPart struct {
	Current   int    `json:"current_slot"`   // slot it is in now
	Canonical int    `json:"canonical_slot"` // slot ESXi puts it in
	Role      Role   `json:"role"`           // what ESXi uses it for
	Type      string `json:"type"`           // type GUID
	First     uint64 `json:"first_lba"`      // LBAs on this disk, in its sector size
	Last      uint64 `json:"last_lba"`
	Exact     bool   `json:"exact"` // boundaries exactly as the installer writes them
}

// NeedsMove reports whether any partition is not at its canonical slot.
func (m *Match) NeedsMove() bool {
	for from, to := range m.SlotMap {
		if from != to {
			return true
		}
	}
	return false
}

// recFamily is one ESXi family as Recognize tries it.
type recFamily struct {
	name    string  // "5.x"
	version Version // a version whose Layout describes the family
}

var recFamilies = []recFamily{{"5.x", "5.0"}, {"6.x", "6.7"}, {"7.x", "7.0"}}

// recProbeSizes are disk sizes whose layouts together show every variant of
// a family (which optional partitions exist); structural matching accepts
// any of them.
var recProbeSizes = []int64{2 * gib, 4 * gib, 8 * gib, 9 * gib, 12 * gib, 16 * gib, 40 * gib, 200 * gib, 1024 * gib}

type recEntry struct {
	slot int
	e    gpt.Entry
}

// recCandidate is one way the table fits a family.
type recCandidate struct {
	fam        recFamily
	exact      bool
	parts      []Part // layout parts in disk order, aligned with the entries
	diskBytes  int64  // the size whose layout matched exactly (0 for structural)
	slotMap    map[int]int
	exactParts []bool
}

// Recognize decides from the used entries' (type, first LBA, last LBA),
// in whatever slots they are, whether t holds an ESXi 5.x, 6.x or 7.x boot
// disk layout, and where each partition belongs. It returns an error that
// explains why when the table is not an ESXi layout or when two recFamilies
// would put the partitions in different slots.
func Recognize(t *gpt.Table) (*Match, error) {
	if t == nil {
		return nil, errors.New("esxi: no table")
	}
	slots := t.Slots()
	if slots == nil {
		return nil, errors.New("esxi: the disk has no usable GPT (both copies damaged or missing), so its layout cannot be recognised")
	}
	var used []recEntry
	for _, s := range slots {
		if s.Used() {
			used = append(used, recEntry{s.Index, s.Entry()})
		}
	}
	if len(used) == 0 {
		return nil, errors.New("esxi: the partition table is empty: not an ESXi boot disk")
	}
	sort.Slice(used, func(i, j int) bool { return used[i].e.First < used[j].e.First })
	for i := 1; i < len(used); i++ {
		if used[i].e.First <= used[i-1].e.Last {
			return nil, fmt.Errorf("esxi: partitions in slots %d and %d overlap: not a layout ESXi writes", used[i-1].slot, used[i].slot)
		}
	}
	ss := t.SectorSize
	sizes := recDiskSizes(t)

	var exact, structural []recCandidate
	for _, f := range recFamilies {
		if c, ok := recMatchExact(f, used, sizes, ss); ok {
			exact = append(exact, c)
			continue
		}
		if c, ok := recMatchStructure(f, used, sizes, ss); ok {
			structural = append(structural, c)
		}
	}
	cands := exact
	if len(cands) == 0 {
		cands = structural
	}
	if len(cands) == 0 {
		return nil, recNotESXi(used, ss)
	}
	for _, c := range cands[1:] {
		if !recSameMap(c.slotMap, cands[0].slotMap) {
			var names []string
			for _, c := range cands {
				names = append(names, "ESXi "+c.fam.name+" ("+recDescribeMap(c.slotMap)+")")
			}
			return nil, fmt.Errorf("esxi: ambiguous: the partitions fit %s, which put them in different slots; use a reference (-ref) instead", strings.Join(names, " and "))
		}
	}
	return recBuildMatch(cands, used, ss), nil
}

// recDiskSizes returns the disk sizes to try exact layouts for: this disk's,
// and the one the table was made for (where its backup header is or the
// primary says it is).
func recDiskSizes(t *gpt.Table) []int64 {
	ss := int64(t.SectorSize)
	out := []int64{t.DiskSize}
	add := func(lastLBA uint64) {
		if lastLBA == 0 || lastLBA > 1<<50 {
			return
		}
		n := int64(lastLBA+1) * ss
		for _, s := range out {
			if s == n {
				return
			}
		}
		out = append(out, n)
	}
	if t.Primary.Valid() {
		add(t.Primary.Header.AlternateLBA)
	}
	if t.Backup.Valid() {
		add(t.Backup.HeaderLBA)
	}
	return out
}

// fits reports whether e is at exactly p's boundaries.
func recFits(e gpt.Entry, p Part, ss int) bool {
	f, l := p.LBAs(ss)
	return e.Type.String() == p.Type && e.First == f && e.Last == l
}

// recMatchExact finds a layout of family f whose every boundary the
// entries have: first for the disk sizes the table itself suggests (then
// the disk size is known), else for any size, leaving the end of the
// last partition free when the installer gives it the rest of the disk
// (the datastore, or OSData on 7.x): a restored or resized disk moves it.
func recMatchExact(f recFamily, used []recEntry, sizes []int64, ss int) (recCandidate, bool) {
	try := func(d int64, freeEnd bool) (recCandidate, bool) {
		parts, err := Layout(f.version, d, ss)
		if err != nil || len(parts) != len(used) {
			return recCandidate{}, false
		}
		n := len(parts)
		if freeEnd && parts[n-1].Role != RoleDatastore && parts[n-1].Role != RoleOSData {
			return recCandidate{}, false
		}
		for i, u := range used {
			if freeEnd && i == n-1 {
				if u.e.Type.String() != parts[i].Type || u.e.First != recFirst(parts[i], ss) {
					return recCandidate{}, false
				}
				continue
			}
			if !recFits(u.e, parts[i], ss) {
				return recCandidate{}, false
			}
		}
		c := recCandidate{fam: f, exact: true, parts: parts, slotMap: map[int]int{}}
		if !freeEnd {
			c.diskBytes = d
		}
		for i, u := range used {
			c.slotMap[u.slot] = parts[i].Slot
			c.exactParts = append(c.exactParts, true)
		}
		return c, true
	}
	for _, d := range sizes {
		if c, ok := try(d, false); ok {
			return c, true
		}
	}
	for _, d := range append(append([]int64(nil), sizes...), recProbeSizes...) {
		if c, ok := try(d, true); ok {
			return c, true
		}
	}
	return recCandidate{}, false
}

// recMatchStructure accepts, for 7.x only (whose sizes depend on the
// medium), the family's partition types in the family's physical order.
// The 5.x and 6.x installers use fixed boundaries: anything else is not
// their layout.
func recMatchStructure(f recFamily, used []recEntry, sizes []int64, ss int) (recCandidate, bool) {
	if f.name != "7.x" {
		return recCandidate{}, false
	}
	for _, d := range append(append([]int64(nil), sizes...), recProbeSizes...) {
		parts, err := Layout(f.version, d, ss)
		if err != nil || len(parts) != len(used) {
			continue
		}
		ok := true
		for i, u := range used {
			if u.e.Type.String() != parts[i].Type {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		c := recCandidate{fam: f, parts: parts, slotMap: map[int]int{}}
		for i, u := range used {
			c.slotMap[u.slot] = parts[i].Slot
			c.exactParts = append(c.exactParts, recFits(u.e, parts[i], ss))
		}
		return c, true
	}
	return recCandidate{}, false
}

func recFirst(p Part, ss int) uint64 {
	f, _ := p.LBAs(ss)
	return f
}

func recSameMap(a, b map[int]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func recDescribeMap(m map[int]int) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var s []string
	for _, k := range keys {
		s = append(s, fmt.Sprintf("%d->%d", k, m[k]))
	}
	return strings.Join(s, " ")
}

func recBuildMatch(cands []recCandidate, used []recEntry, ss int) *Match {
	c := cands[0]
	m := &Match{Family: c.fam.name, Confidence: ConfidenceStructural, SlotMap: c.slotMap}
	if c.exact {
		m.Confidence = ConfidenceExact
	}
	if len(cands) > 1 {
		var names []string
		for _, x := range cands {
			names = append(names, x.fam.name)
		}
		m.Family = strings.Join(names, " or ")
	}
	for i, u := range used {
		m.Parts = append(m.Parts, MatchedPart{Current: u.slot, Canonical: c.parts[i].Slot, Role: c.parts[i].Role,
			Type: u.e.Type.String(), First: u.e.First, Last: u.e.Last, Exact: c.exactParts[i]})
	}
	var b strings.Builder
	switch {
	case c.exact && c.diskBytes > 0:
		fmt.Fprintf(&b, "ESXi %s boot disk layout, exact match: all %d partitions have the boundaries the ESXi %s installer writes on a disk of %s.\n",
			m.Family, len(used), m.Family, recSizeText(c.diskBytes))
	case c.exact:
		last := used[len(used)-1].e
		fmt.Fprintf(&b, "ESXi %s boot disk layout, exact match: all %d partitions start where the ESXi %s installer puts them and have its sizes; the last one (%s) ends at LBA %d.\n",
			m.Family, len(used), m.Family, c.parts[len(used)-1].Role, last.Last)
	default:
		fmt.Fprintf(&b, "ESXi %s boot disk layout, structural match: the partition types and their order on disk are those of ESXi %s, but some sizes differ from what its installer writes.\n",
			m.Family, m.Family)
	}
	if len(cands) > 1 {
		fmt.Fprintf(&b, "(ESXi %s put these partitions in the same slots, so which one it is does not matter here.)\n", m.Family)
	}
	b.WriteString("Partitions in disk order:\n")
	for _, p := range m.Parts {
		state := "in its slot"
		if p.Current != p.Canonical {
			state = fmt.Sprintf("now in slot %d, belongs in slot %d", p.Current, p.Canonical)
		}
		size := ""
		if !p.Exact {
			size = ", size differs from the installer's"
		}
		fmt.Fprintf(&b, "  entry %d %-11s %-15s LBA %d-%d (%s): %s%s\n", p.Canonical, string(p.Role), recTypeName(p.Type), p.First, p.Last,
			recSizeText(int64(p.Last-p.First+1)*int64(ss)), state, size)
	}
	if m.NeedsMove() {
		b.WriteString("Some entries are not in the slots ESXi gave them. ESXi finds partitions by entry number (its boot loader looks for the boot banks at entries 5 and 6), so it will not boot or run correctly until they are moved back.\n")
	}
	m.Text = b.String()
	return m
}

// recNotESXi explains why no family fits.
func recNotESXi(used []recEntry, ss int) error {
	var found []string
	for _, u := range used {
		found = append(found, recTypeName(u.e.Type.String()))
	}
	var want []string
	for _, f := range recFamilies {
		seen := map[string]bool{}
		for _, d := range recProbeSizes {
			parts, err := Layout(f.version, d, ss)
			if err != nil {
				continue
			}
			var s []string
			for _, p := range parts {
				s = append(s, recTypeName(p.Type))
			}
			k := strings.Join(s, ", ")
			if !seen[k] {
				seen[k] = true
				want = append(want, fmt.Sprintf("ESXi %s: %s", f.name, k))
			}
		}
	}
	return fmt.Errorf("esxi: not an ESXi boot disk layout: the %d partitions in disk order are %s; ESXi layouts (with %d-byte sectors) are:\n  %s",
		len(used), strings.Join(found, ", "), ss, strings.Join(want, "\n  "))
}

var recTypeNames = map[string]string{
	TypeEFISystem:      "EFI system",
	TypeBasicData:      "Basic data",
	TypeVMFS:           "VMFS",
	TypeVMKDiagnostic:  "vmkDiagnostic",
	TypeVMFSL:          "VMFS-L",
	TypeVMwareReserved: "VMware reserved",
}

func recTypeName(t string) string {
	if n, ok := recTypeNames[t]; ok {
		return n
	}
	return t
}

func recSizeText(n int64) string {
	switch {
	case n >= gib:
		return fmt.Sprintf("%.1f GiB", float64(n)/float64(gib))
	case n >= mib:
		return fmt.Sprintf("%.1f MiB", float64(n)/float64(mib))
	}
	return fmt.Sprintf("%d KiB", n/1024)
}
