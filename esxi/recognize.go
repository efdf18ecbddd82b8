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
	// Family is the ESXi family whose installer wrote the table: "5.x",
	// "6.x", "7.x", "8.x", or "5.x or 6.x" / "7.x or 8.x" when both lay
	// the partitions out identically.
	Family     string `json:"family"`
	Confidence string `json:"confidence"` // ConfidenceExact or ConfidenceStructural
	// Medium is "disk", "usb" (USB stick or SD card) or "disk or usb"
	// when the table does not tell.
	Medium string `json:"medium"`
	// Variant names the installer options the table fits, e.g. "fresh
	// install", "systemMediaSize=min", "or a 6.x host upgraded from 5.x".
	Variant string `json:"variant"`
	// Grown: the last partition (datastore or OSDATA) ends past where the
	// installer ended it on the disk the table was made for.
	Grown   bool          `json:"grown"`
	SlotMap map[int]int   `json:"slot_map"` // current slot -> canonical slot, for every used entry
	Parts   []MatchedPart `json:"parts"`
	Text    string        `json:"text"` // plain-words explanation for a sysadmin
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

// recVariant is one installer configuration Recognize tries.
type recVariant struct {
	family  string  // "5.x"
	version Version // a version whose layout is the family's
	media   Media
	sms     string // systemMediaSize=, "" for none
}

func (v recVariant) name() string {
	if v.sms != "" && v.sms != SystemMediaDefault {
		return "systemMediaSize=" + v.sms
	}
	return "fresh install"
}

// recVariants: every family x medium x systemMediaSize. A 6.x host
// upgraded from 5.x keeps the 5.x table, so it shows as 5.x (said in
// Variant).
var recVariants = func() []recVariant {
	var out []recVariant
	for _, f := range []struct {
		name string
		v    Version
	}{{"5.x", "5.0"}, {"6.x", "6.7"}, {"7.x", "7.0"}, {"8.x", "8.0"}} {
		for _, m := range []Media{MediaDisk, MediaUSB} {
			if (f.name == "7.x" || f.name == "8.x") && m == MediaDisk {
				for _, s := range SystemMediaSizes {
					out = append(out, recVariant{f.name, f.v, m, s})
				}
				continue
			}
			out = append(out, recVariant{f.name, f.v, m, ""})
		}
	}
	return out
}()

// recProbeSizes are disk sizes whose layouts together show every variant
// (which optional partitions exist, the boot bank size classes); the
// sizes the table itself implies are tried first.
var recProbeSizes = []int64{2 * gib, 3 * gib, 4 * gib, 6 * gib, 8 * gib, 9 * gib, 12 * gib, 16 * gib, 24 * gib,
	40 * gib, 64 * gib, 80 * gib, 100 * gib, 133 * gib, 200 * gib, 1024 * gib, 16384 * gib}

type recEntry struct {
	slot int
	e    gpt.Entry
}

// recCandidate is one way the table fits a variant.
type recCandidate struct {
	v          recVariant
	level      int    // recExact, recGrown or recStructural
	parts      []Part // layout parts in disk order, aligned with the entries
	diskBytes  int64  // the size whose layout matched (exact only)
	grown      bool   // exact for the size the last partition's end implies, not for this disk's
	slotMap    map[int]int
	exactParts []bool
}

// Match levels, best first.
const (
	recExact = iota
	recGrown
	recStructural
)

// Recognize decides from the used entries' (type, first LBA, last LBA),
// in whatever slots they are, whether t holds an ESXi 5.x, 6.x, 7.x or 8.x
// boot disk layout (on a disk or USB/SD medium, with any systemMediaSize=,
// 512-byte or 4 KiB sectors, names present or not), and where each
// partition belongs. The last partition, when the installer gives it the
// rest of the disk (the datastore, or OSDATA), may end past the
// installer's end (a grown disk). It returns an error that explains why
// when the table is not an ESXi layout, or when layouts that fit equally
// well would put the partitions in different slots.
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
	sizes, implied := recDiskSizes(t, used)

	best := recStructural + 1
	var cands []recCandidate
	for _, v := range recVariants {
		c, ok := recMatch(v, used, sizes, implied, ss)
		if !ok {
			continue
		}
		switch {
		case c.level < best:
			best, cands = c.level, []recCandidate{c}
		case c.level == best:
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return nil, recNotESXi(used, ss)
	}
	if err := recAmbiguous(cands); err != nil {
		return nil, err
	}
	return recBuildMatch(cands, used, ss), nil
}

// recAmbiguous refuses candidates that fit equally well but put the
// partitions in different slots, naming them.
func recAmbiguous(cands []recCandidate) error {
	for _, c := range cands[1:] {
		if !recSameMap(c.slotMap, cands[0].slotMap) {
			var names []string
			for _, c := range cands {
				names = append(names, fmt.Sprintf("ESXi %s on a %s, %s (%s)", c.v.family, c.v.media, c.v.name(), recDescribeMap(c.slotMap)))
			}
			return fmt.Errorf("esxi: ambiguous: the partitions fit %s, which put them in different slots; use a reference (-ref) instead", strings.Join(names, " and "))
		}
	}
	return nil
}

// recDiskSizes returns the disk sizes to try exact layouts for: this
// disk's, the one the table was made for (where its backup header is or
// the primary says it is), and (implied) the ones for which the last
// partition ends where an installer ends a partition that takes the rest
// of the disk.
func recDiskSizes(t *gpt.Table, used []recEntry) (sizes, implied []int64) {
	ss := int64(t.SectorSize)
	out := &sizes
	add := func(n int64) {
		if n <= 0 || n > 1<<60 {
			return
		}
		for _, s := range append(append([]int64(nil), sizes...), implied...) {
			if s == n {
				return
			}
		}
		*out = append(*out, n)
	}
	add(t.DiskSize)
	addLBA := func(lastLBA uint64) {
		if lastLBA != 0 && lastLBA < 1<<50 {
			add(int64(lastLBA+1) * ss)
		}
	}
	if t.Primary.Valid() {
		addLBA(t.Primary.Header.AlternateLBA)
	}
	if t.Backup.Valid() {
		addLBA(t.Backup.HeaderLBA)
	}
	out = &implied
	if last := used[len(used)-1].e.Last; last < 1<<50 {
		if ss == 4096 {
			add((int64(last) + 6) * 4096)
		} else {
			add((int64(last) + 1 + gptTailSectors) * 512)
			add((int64(last) + 1 + gptTailSectors + 7) * 512) // 512e: rounded down to 4 KiB
		}
	}
	return sizes, implied
}

// fits reports whether e is at exactly p's boundaries.
func recFits(e gpt.Entry, p Part, ss int) bool {
	f, l := p.LBAs(ss)
	return e.Type.String() == p.Type && e.First == f && e.Last == l
}

// recMatch finds the best way the entries fit variant v: every boundary
// exactly for one of the disk sizes (exact), or every boundary but the
// end of a last partition that takes the rest of the disk, which ends
// later (grown; a shorter one is accepted too: the restored disk may be a
// copy of a larger one's table), or for 7.x/8.x, whose sizes depend on the
// medium, only the types in the physical order (structural).
func recMatch(v recVariant, used []recEntry, sizes, implied []int64, ss int) (recCandidate, bool) {
	layouts := func(d int64) [][]Part {
		var out [][]Part
		phys := []int{ss}
		if ss == 512 {
			phys = append(phys, 4096)
		}
		for _, ps := range phys {
			parts, err := LayoutFor(Spec{Version: v.version, DiskBytes: d, SectorSize: ss, PhysicalSectorSize: ps, Media: v.media, SystemMediaSize: v.sms})
			if err == nil && len(parts) == len(used) {
				out = append(out, parts)
			}
		}
		return out
	}
	mk := func(level int, parts []Part, d int64) recCandidate {
		c := recCandidate{v: v, level: level, parts: parts, diskBytes: d, slotMap: map[int]int{}}
		for i, u := range used {
			c.slotMap[u.slot] = parts[i].Slot
			c.exactParts = append(c.exactParts, recFits(u.e, parts[i], ss))
		}
		return c
	}
	all := append(append(append([]int64(nil), sizes...), implied...), recProbeSizes...)
	for i, d := range append(append([]int64(nil), sizes...), implied...) {
		for _, parts := range layouts(d) {
			ok := true
			for i, u := range used {
				ok = ok && recFits(u.e, parts[i], ss)
			}
			if ok {
				c := mk(recExact, parts, d)
				c.grown = i >= len(sizes)
				return c, true
			}
		}
	}
	for _, d := range all {
		for _, parts := range layouts(d) {
			n := len(parts)
			if r := parts[n-1].Role; r != RoleDatastore && r != RoleOSData {
				continue
			}
			ok := true
			for i, u := range used[:n-1] {
				ok = ok && recFits(u.e, parts[i], ss)
			}
			last := used[n-1].e
			if ok && last.Type.String() == parts[n-1].Type && last.First == recFirst(parts[n-1], ss) {
				return mk(recGrown, parts, 0), true
			}
		}
	}
	if v.family != "7.x" && v.family != "8.x" {
		return recCandidate{}, false
	}
	for _, d := range all {
		for _, parts := range layouts(d) {
			ok := true
			for i, u := range used {
				ok = ok && u.e.Type.String() == parts[i].Type
			}
			if ok {
				return mk(recStructural, parts, 0), true
			}
		}
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

// recAll reports whether f holds for every candidate.
func recAll(cands []recCandidate, f func(recCandidate) bool) bool {
	for _, c := range cands {
		if !f(c) {
			return false
		}
	}
	return true
}

// recJoin joins the distinct values of f over cands with " or ".
func recJoin(cands []recCandidate, f func(recCandidate) string) string {
	var out []string
	seen := map[string]bool{}
	for _, c := range cands {
		if s := f(c); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return strings.Join(out, " or ")
}

func recBuildMatch(cands []recCandidate, used []recEntry, ss int) *Match {
	c := cands[0]
	m := &Match{SlotMap: c.slotMap, Confidence: ConfidenceExact, Grown: c.level == recGrown || c.grown}
	if c.level == recStructural {
		m.Confidence = ConfidenceStructural
	}
	m.Family = recJoin(cands, func(c recCandidate) string { return c.v.family })
	m.Medium = recJoin(cands, func(c recCandidate) string { return string(c.v.media) })
	m.Variant = recJoin(cands, func(c recCandidate) string { return c.v.name() })
	if recAll(cands, func(c recCandidate) bool { return c.v.sms != "" }) {
		// 7.x/8.x on a disk: name the systemMediaSize= values that fit
		sms := recJoin(cands, func(c recCandidate) string { return c.v.sms })
		m.Variant = "fresh install, systemMediaSize=" + strings.ReplaceAll(sms, " or ", "|")
	}
	if strings.HasPrefix(m.Family, "5.x") {
		m.Variant += " (or a 6.x host upgraded from 5.x: it keeps the 5.x table)"
	}
	for i, u := range used {
		m.Parts = append(m.Parts, MatchedPart{Current: u.slot, Canonical: c.parts[i].Slot, Role: c.parts[i].Role,
			Type: u.e.Type.String(), First: u.e.First, Last: u.e.Last, Exact: c.exactParts[i]})
	}
	var b strings.Builder
	on := fmt.Sprintf("on a %s (%s)", strings.ReplaceAll(m.Medium, "usb", "USB stick or SD card"), m.Variant)
	switch {
	case c.level == recExact && !c.grown:
		fmt.Fprintf(&b, "ESXi %s boot disk layout %s, exact match: all %d partitions have the boundaries the ESXi %s installer writes on a medium of %s.\n",
			m.Family, on, len(used), m.Family, recSizeText(c.diskBytes))
	case c.level != recStructural:
		last := used[len(used)-1].e
		fmt.Fprintf(&b, "ESXi %s boot disk layout %s, exact match: all %d partitions start where the ESXi %s installer puts them and have its sizes; the last one (%s) ends at LBA %d, not where the installer ended it (a disk that grew or a table from another disk).\n",
			m.Family, on, len(used), m.Family, c.parts[len(used)-1].Role, last.Last)
	default:
		fmt.Fprintf(&b, "ESXi %s boot disk layout %s, structural match: the partition types and their order on disk are those of ESXi %s, but some sizes differ from what its installer writes.\n",
			m.Family, on, m.Family)
	}
	if len(cands) > 1 {
		fmt.Fprintf(&b, "(The layouts that fit put these partitions in the same slots, so which one it is does not matter here.)\n")
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
		b.WriteString("Some entries are not in the slots ESXi gave them. ESXi finds partitions by entry number (its boot loader up to 6.7u1 looks for the boot banks at entries 5 and 6 only; ESXi mounts store/locker, scratch, OSDATA and the datastore by number), so it will not boot or run correctly until they are moved back.\n")
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
	seen := map[string]bool{}
	for _, v := range recVariants {
		for _, d := range recProbeSizes {
			parts, err := LayoutFor(Spec{Version: v.version, DiskBytes: d, SectorSize: ss, Media: v.media, SystemMediaSize: v.sms})
			if err != nil {
				continue
			}
			var s []string
			for _, p := range parts {
				s = append(s, recTypeName(p.Type))
			}
			k := "ESXi " + v.family + ": " + strings.Join(s, ", ")
			if !seen[k] {
				seen[k] = true
				want = append(want, k)
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
