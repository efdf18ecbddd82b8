package esxi

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
)

// rgEntry is one partition to put in a test table.
type rgEntry struct {
	slot        int
	typ         string
	first, last uint64 // in the table's sectors
	name        string
}

// rgTable builds a table in memory: a valid primary copy made for a disk
// of madeFor bytes, read from a disk of diskBytes bytes.
func rgTable(ss int, diskBytes, madeFor int64, es []rgEntry) *gpt.Table {
	return &gpt.Table{SectorSize: ss, DiskSize: diskBytes, Primary: rgCopy(ss, madeFor, es, false)}
}

// rgCopy is one valid copy of a table made for a disk of madeFor bytes.
func rgCopy(ss int, madeFor int64, es []rgEntry, backup bool) *gpt.Copy {
	arr := make([]byte, 128*128)
	for _, e := range es {
		b := arr[(e.slot-1)*128 : e.slot*128]
		g := gpt.MustParseGUID(e.typ)
		copy(b[0:16], g[:])
		rand.Read(b[16:32])
		binary.LittleEndian.PutUint64(b[32:], e.first)
		binary.LittleEndian.PutUint64(b[40:], e.last)
		for i, r := range e.name {
			binary.LittleEndian.PutUint16(b[56+2*i:], uint16(r))
		}
	}
	end := uint64(madeFor/int64(ss)) - 1
	h := gpt.Header{MyLBA: 1, AlternateLBA: end, EntryLBA: 2, NumEntries: 128, EntrySize: 128}
	if backup {
		h = gpt.Header{MyLBA: end, AlternateLBA: 1, EntryLBA: end - uint64(128*128/ss), NumEntries: 128, EntrySize: 128}
		return &gpt.Copy{Which: "backup", HeaderLBA: end, Header: h, Array: arr}
	}
	return &gpt.Copy{Which: "primary", HeaderLBA: 1, Header: h, Array: arr}
}

// rgLayout returns the layout's entries, at their canonical slots or at
// the slots arrange gives them (index in disk order -> slot).
func rgLayout(t *testing.T, v Version, size int64, ss int, arrange func(i int, p Part) int) ([]rgEntry, map[int]int) {
	t.Helper()
	parts, err := Layout(v, size, ss)
	if err != nil {
		t.Fatal(err)
	}
	return rgLayoutParts(parts, ss, arrange, false)
}

// rgLayoutParts is rgLayout for given parts, with their entry names or not.
func rgLayoutParts(parts []Part, ss int, arrange func(i int, p Part) int, names bool) ([]rgEntry, map[int]int) {
	var es []rgEntry
	want := map[int]int{}
	for i, p := range parts {
		f, l := p.LBAs(ss)
		slot := p.Slot
		if arrange != nil {
			slot = arrange(i, p)
		}
		e := rgEntry{slot, p.Type, f, l, ""}
		if names {
			e.name = p.Name
		}
		es = append(es, e)
		want[slot] = p.Slot
	}
	return es, want
}

// compacted gives the slots a compacting rewrite leaves: canonical order,
// gaps closed.
func rgCompacted(parts []Part) func(int, Part) int {
	bySlot := BySlot(parts)
	pos := map[int]int{}
	for i, p := range bySlot {
		pos[p.Slot] = i + 1
	}
	return func(_ int, p Part) int { return pos[p.Slot] }
}

// rgSpecs are the installations the recognition matrix covers: every
// version, medium, size class and systemMediaSize, with the family,
// medium and variant Recognize must name.
type rgSpec struct {
	spec   Spec
	family string // Match.Family wanted
	medium string // Match.Medium wanted
}

func rgSpecs() []rgSpec {
	var out []rgSpec
	for _, v := range Versions {
		for _, ss := range []int{512, 4096} {
			for _, media := range []Media{MediaDisk, MediaUSB} {
				for _, size := range []int64{3 * gib, 8 * gib, 16 * gib, 40 * gib, 200 * gib} {
					smss := []string{""}
					if (v.Family() == "7" || v.Family() == "8") && media == MediaDisk {
						smss = SystemMediaSizes
					}
					for _, sms := range smss {
						out = append(out, rgSpec{spec: Spec{Version: v, DiskBytes: size, SectorSize: ss, Media: media, SystemMediaSize: sms}})
					}
				}
			}
		}
	}
	out = append(out, rgSpec{spec: Spec{Version: "6.7", DiskBytes: 16 * gib, SectorSize: 512, UpgradedFrom: "5.0"}},
		rgSpec{spec: Spec{Version: "6.7", DiskBytes: 16 * gib, SectorSize: 512, PhysicalSectorSize: 4096}},
		rgSpec{spec: Spec{Version: "7.0", DiskBytes: 200 * gib, SectorSize: 512, PhysicalSectorSize: 4096}})
	var ok []rgSpec
	for _, r := range out {
		parts, err := LayoutFor(r.spec)
		if err != nil {
			continue // 4Kn before 6.5, too small, ...
		}
		fam := r.spec.Version.Family()
		if r.spec.UpgradedFrom != "" {
			fam = r.spec.UpgradedFrom.Family()
		}
		r.family = fam + ".x"
		switch {
		case fam == "7" || fam == "8":
			// 8.0 writes 7.0's table, where it installs at all
			s7, s8 := r.spec, r.spec
			s7.Version, s8.Version = "7.0", "8.0"
			p7, err7 := LayoutFor(s7)
			p8, err8 := LayoutFor(s8)
			if err7 == nil && err8 == nil && fmt.Sprint(p7) == fmt.Sprint(p8) {
				r.family = "7.x or 8.x"
			}
		case len(parts) == 5 && r.spec.SectorSize != 4096:
			r.family = "5.x or 6.x" // no optional partitions: both lay it out the same (5.x has no 4Kn)
		}
		r.medium = "disk or usb"
		switch {
		case fam != "7" && fam != "8" && len(parts) > 6:
			r.medium = "disk" // scratch and datastore: not on USB/SD
		case (fam == "7" || fam == "8") && len(parts) > 3:
			r.medium = "disk"
		case (fam == "7" || fam == "8") && len(parts) == 3:
			r.medium = "usb"
		}
		ok = append(ok, r)
	}
	return ok
}

// TestRecognizeLayouts: every layout x {as installed, compacted, sorted,
// reversed, stale backup} x {names, no names} x {this disk, grown by 4 GiB
// with the backup left at the old end} is recognised exactly, with the
// family, medium and slot map it has.
func TestRecognizeLayouts(t *testing.T) {
	specs := rgSpecs()
	if len(specs) < 60 {
		t.Fatalf("only %d layouts in the matrix", len(specs))
	}
	for _, r := range specs {
		parts, _ := LayoutFor(r.spec)
		ss := r.spec.SectorSize
		arrangements := map[string]func(int, Part) int{
			"installed": nil,
			"compacted": rgCompacted(parts),
			"sorted":    func(i int, _ Part) int { return i + 1 },
			"reversed":  func(i int, _ Part) int { return 100 - i },
		}
		for name, arr := range arrangements {
			for _, names := range []bool{true, false} {
				for _, grown := range []int64{0, 4 * gib} {
					for _, stale := range []bool{false, true} {
						t.Run(fmt.Sprintf("%s-%s-names%v-grown%d-stale%v", rgName(r.spec), name, names, grown/gib, stale), func(t *testing.T) {
							es, want := rgLayoutParts(parts, ss, arr, names)
							tb := rgTable(ss, r.spec.DiskBytes+grown, r.spec.DiskBytes, es)
							if stale {
								// the backup is the table as installed, at the old end
								inst, _ := rgLayoutParts(parts, ss, nil, names)
								tb.Backup = rgCopy(ss, r.spec.DiskBytes, inst, true)
							}
							m, err := Recognize(tb)
							if err != nil {
								t.Fatal(err)
							}
							if m.Family != r.family || m.Confidence != ConfidenceExact || m.Medium != r.medium {
								t.Errorf("family %q medium %q confidence %q, want %q %q exact\n%s", m.Family, m.Medium, m.Confidence, r.family, r.medium, m.Text)
							}
							if fmt.Sprint(m.SlotMap) != fmt.Sprint(want) {
								t.Errorf("slot map %v, want %v", m.SlotMap, want)
							}
							if m.NeedsMove() != (name != "installed") {
								t.Errorf("NeedsMove = %v", m.NeedsMove())
							}
							if r.spec.SystemMediaSize != "" && r.spec.SystemMediaSize != SystemMediaDefault && len(parts) == 5 && !strings.Contains(m.Variant, r.spec.SystemMediaSize) {
								t.Errorf("variant %q does not name systemMediaSize=%s", m.Variant, r.spec.SystemMediaSize)
							}
						})
					}
				}
			}
		}
	}
}

// TestRecognizeGrownDatastore: the datastore (or OSDATA) extended to the
// end of a larger disk, backup moved there too: still an exact match, and
// Grown says so.
func TestRecognizeGrownDatastore(t *testing.T) {
	for _, c := range []Spec{
		{Version: "5.0", DiskBytes: 8 * gib, SectorSize: 512},
		{Version: "6.7", DiskBytes: 16 * gib, SectorSize: 4096},
		{Version: "7.0", DiskBytes: 200 * gib, SectorSize: 512},
		{Version: "8.0", DiskBytes: 40 * gib, SectorSize: 512},
		{Version: "7.0", DiskBytes: 80 * gib, SectorSize: 512, SystemMediaSize: "min"},
	} {
		parts, err := LayoutFor(c)
		if err != nil {
			t.Fatal(err)
		}
		es, want := rgLayoutParts(parts, c.SectorSize, rgCompacted(parts), false)
		newSize := c.DiskBytes * 3
		for i := range es {
			if es[i].last == maxLast(es) {
				es[i].last = uint64(newSize/int64(c.SectorSize)) - 100 // not where any installer ends it
			}
		}
		m, err := Recognize(rgTable(c.SectorSize, newSize, newSize, es))
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if !m.Grown || m.Confidence != ConfidenceExact || fmt.Sprint(m.SlotMap) != fmt.Sprint(want) {
			t.Errorf("%+v: grown %v confidence %s map %v, want grown exact %v\n%s", c, m.Grown, m.Confidence, m.SlotMap, want, m.Text)
		}
	}
}

func maxLast(es []rgEntry) uint64 {
	var m uint64
	for _, e := range es {
		if e.last > m {
			m = e.last
		}
	}
	return m
}

func rgName(s Spec) string {
	n := fmt.Sprintf("%s-%d-%dG-%s", s.Version, s.SectorSize, s.DiskBytes/gib, s.Media)
	if s.SystemMediaSize != "" {
		n += "-" + s.SystemMediaSize
	}
	if s.UpgradedFrom != "" {
		n += "-from" + string(s.UpgradedFrom)
	}
	if s.PhysicalSectorSize != 0 {
		n += "-512e"
	}
	return n
}

// TestRecognizeIncident: the incident's compacted 5.0 table, read on the
// 12 GiB disk, maps slots 4,5,6,7 back to 5,6,7,8 and says so.
func TestRecognizeIncident(t *testing.T) {
	parts, _ := Layout("5.0", 8*gib, 512)
	es, _ := rgLayout(t, "5.0", 8*gib, 512, rgCompacted(parts))
	m, err := Recognize(rgTable(512, 12*gib, 8*gib, es))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]int{1: 1, 2: 2, 3: 3, 4: 5, 5: 6, 6: 7, 7: 8}
	if fmt.Sprint(m.SlotMap) != fmt.Sprint(want) {
		t.Errorf("slot map %v, want %v", m.SlotMap, want)
	}
	for _, s := range []string{"ESXi 5.x", "exact", "8.0 GiB", "now in slot 4, belongs in slot 5", "bootbank"} {
		if !strings.Contains(m.Text, s) {
			t.Errorf("text lacks %q:\n%s", s, m.Text)
		}
	}
}

// TestRecognizeStructural: ESXi 7 with boot banks of a size no installer
// writes is recognised by structure; a 5.x datastore that ends elsewhere
// is still an exact 5.x layout.
func TestRecognizeStructural(t *testing.T) {
	// 7.0: 2 GiB banks.
	bank := uint64(2 * gib / 512)
	es := []rgEntry{
		{3, TypeEFISystem, 64, 204863, ""},
		{1, TypeBasicData, 206848, 206848 + bank - 1, ""},
		{2, TypeBasicData, 206848 + bank, 206848 + 2*bank - 1, ""},
		{4, TypeVMFSL, 206848 + 2*bank, 60 * 1024 * 2048, ""},
	}
	m, err := Recognize(rgTable(512, 64*gib, 64*gib, es))
	if err != nil {
		t.Fatal(err)
	}
	if m.Family != "7.x or 8.x" || m.Confidence != ConfidenceStructural || fmt.Sprint(m.SlotMap) != fmt.Sprint(map[int]int{3: 1, 1: 5, 2: 6, 4: 7}) {
		t.Errorf("got %s %s %v\n%s", m.Family, m.Confidence, m.SlotMap, m.Text)
	}
	// 5.0 whose datastore ends short of the disk end.
	es5, _ := rgLayout(t, "5.0", 8*gib, 512, rgCompacted(rgMustLayout(t, "5.0", 8*gib)))
	for i := range es5 {
		if es5[i].typ == TypeVMFS {
			es5[i].last -= 2048
		}
	}
	m, err = Recognize(rgTable(512, 8*gib, 8*gib, es5))
	if err != nil {
		t.Fatal(err)
	}
	if m.Family != "5.x" || m.Confidence != ConfidenceExact || m.SlotMap[4] != 5 || !strings.Contains(m.Text, "datastore) ends at LBA") {
		t.Errorf("got %s %s %v\n%s", m.Family, m.Confidence, m.SlotMap, m.Text)
	}
	// The incident after sgdisk -e moved the backup: the disk size the
	// table was made for is gone, the datastore end still identifies it.
	es5, _ = rgLayout(t, "5.0", 8*gib, 512, rgCompacted(rgMustLayout(t, "5.0", 8*gib)))
	m, err = Recognize(rgTable(512, 12*gib, 12*gib, es5))
	if err != nil || m.Confidence != ConfidenceExact || m.SlotMap[7] != 8 {
		t.Errorf("relocated incident: %v %+v", err, m)
	}
}

func rgMustLayout(t *testing.T, v Version, size int64) []Part {
	parts, err := Layout(v, size, 512)
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

// TestRecognizeRefuses: tables that are not ESXi layouts are refused with
// an explanation, never guessed at.
func TestRecognizeRefuses(t *testing.T) {
	const linux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	es5, _ := rgLayout(t, "5.0", 8*gib, 512, nil)
	cases := []struct {
		name string
		es   []rgEntry
		want string
	}{
		{"empty", nil, "empty"},
		{"linux", []rgEntry{{1, TypeEFISystem, 2048, 1050623, ""}, {2, linux, 1050624, 16777182, ""}}, "not an ESXi boot disk layout"},
		{"extra-partition", func() []rgEntry {
			es := append([]rgEntry(nil), es5...)
			for i := range es {
				if es[i].slot == 3 {
					es[i].last -= 2048
				}
			}
			return append(es, rgEntry{4, linux, 16777182 - 1000, 16777182 - 10, ""})
		}(), "not an ESXi"},
		{"missing-store", func() []rgEntry {
			var es []rgEntry
			for _, e := range es5 {
				if e.slot != 8 {
					es = append(es, e)
				}
			}
			return es
		}(), "not an ESXi"},
		{"7.x-bank-as-vmfs", []rgEntry{{1, TypeEFISystem, 64, 204863, ""}, {5, TypeBasicData, 208896, 8595455, ""}, {6, TypeVMFS, 8597504, 16984063, ""}}, "not an ESXi"},
		{"moved-bootbank", func() []rgEntry {
			es := append([]rgEntry(nil), es5...)
			for i := range es {
				if es[i].slot == 5 {
					es[i].first += 8
				}
			}
			return es
		}(), "not an ESXi"},
		{"overlap", []rgEntry{{1, TypeEFISystem, 64, 8191, ""}, {5, TypeBasicData, 8000, 520191, ""}}, "overlap"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sort.Slice(c.es, func(i, j int) bool { return c.es[i].slot < c.es[j].slot })
			m, err := Recognize(rgTable(512, 8*gib, 8*gib, c.es))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v (match %+v), want %q", err, m, c.want)
			}
		})
	}
	// A 5.x table with 4 KiB sectors: 5.x has no 4Kn, and 6.x keeps a 5.x
	// table only from a 5.x install.
	es4 := []rgEntry{}
	for _, e := range es5 {
		es4 = append(es4, rgEntry{e.slot, e.typ, e.first / 8, (e.last+1)/8 - 1, ""})
	}
	if m, err := Recognize(rgTable(4096, 8*gib, 8*gib, es4)); err == nil {
		t.Errorf("a 5.x table on 4Kn was recognised: %+v", m)
	}
	// No usable copy at all.
	if _, err := Recognize(&gpt.Table{SectorSize: 512, DiskSize: 8 * gib}); err == nil {
		t.Error("a table without a valid copy was recognised")
	}
}

// TestRecognizeAmbiguous: layouts that fit alike but put the partitions
// in different slots are refused, naming both. (No two layouts of the
// matrix do so: TestRecognizeLayouts would fail.)
func TestRecognizeAmbiguous(t *testing.T) {
	a := recCandidate{v: recVariants[0], slotMap: map[int]int{1: 1, 2: 5}}
	b := recCandidate{v: recVariants[2], slotMap: map[int]int{1: 1, 2: 6}}
	err := recAmbiguous([]recCandidate{a, b})
	if err == nil || !strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), "2->5") || !strings.Contains(err.Error(), "2->6") {
		t.Errorf("err = %v", err)
	}
	if err := recAmbiguous([]recCandidate{a, {v: recVariants[1], slotMap: map[int]int{1: 1, 2: 5}}}); err != nil {
		t.Errorf("same slots refused: %v", err)
	}
}
