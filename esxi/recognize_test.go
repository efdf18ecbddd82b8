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
}

// rgTable builds a table in memory: a valid primary copy made for a disk
// of madeFor bytes, read from a disk of diskBytes bytes.
func rgTable(ss int, diskBytes, madeFor int64, es []rgEntry) *gpt.Table {
	arr := make([]byte, 128*128)
	for _, e := range es {
		b := arr[(e.slot-1)*128 : e.slot*128]
		g := gpt.MustParseGUID(e.typ)
		copy(b[0:16], g[:])
		rand.Read(b[16:32])
		binary.LittleEndian.PutUint64(b[32:], e.first)
		binary.LittleEndian.PutUint64(b[40:], e.last)
	}
	h := gpt.Header{MyLBA: 1, AlternateLBA: uint64(madeFor/int64(ss)) - 1, EntryLBA: 2, NumEntries: 128, EntrySize: 128}
	return &gpt.Table{SectorSize: ss, DiskSize: diskBytes,
		Primary: &gpt.Copy{Which: "primary", HeaderLBA: 1, Header: h, Array: arr}}
}

// rgLayout returns the layout's entries, at their canonical slots or at
// the slots arrange gives them (index in disk order -> slot).
func rgLayout(t *testing.T, v Version, size int64, ss int, arrange func(i int, p Part) int) ([]rgEntry, map[int]int) {
	t.Helper()
	parts, err := Layout(v, size, ss)
	if err != nil {
		t.Fatal(err)
	}
	var es []rgEntry
	want := map[int]int{}
	for i, p := range parts {
		f, l := p.LBAs(ss)
		slot := p.Slot
		if arrange != nil {
			slot = arrange(i, p)
		}
		es = append(es, rgEntry{slot, p.Type, f, l})
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

func TestRecognizeLayouts(t *testing.T) {
	for _, v := range Versions {
		for _, ss := range []int{512, 4096} {
			for _, size := range []int64{3 * gib, 8 * gib, 12 * gib, 200 * gib} {
				parts, err := Layout(v, size, ss)
				if err != nil {
					continue // e.g. 4Kn before 6.5, or too small for 7.0
				}
				wantFamily := v.Family() + ".x"
				if len(parts) == 5 && v.Family() != "7" && ss == 512 {
					wantFamily = "5.x or 6.x" // no optional partitions: both lay it out the same (5.x has no 4Kn)
				}
				arrangements := map[string]func(int, Part) int{
					"canonical": nil,
					"compacted": rgCompacted(parts),
					"sorted":    func(i int, _ Part) int { return i + 1 },
					"reversed":  func(i int, _ Part) int { return 100 - i },
				}
				for name, arr := range arrangements {
					for _, grown := range []int64{0, 4 * gib} {
						t.Run(fmt.Sprintf("%s-%d-%dG-%s-grown%d", v, ss, size/gib, name, grown/gib), func(t *testing.T) {
							es, want := rgLayout(t, v, size, ss, arr)
							m, err := Recognize(rgTable(ss, size+grown, size, es))
							if err != nil {
								t.Fatal(err)
							}
							if m.Family != wantFamily || m.Confidence != ConfidenceExact {
								t.Errorf("family %q confidence %q, want %q exact\n%s", m.Family, m.Confidence, wantFamily, m.Text)
							}
							if fmt.Sprint(m.SlotMap) != fmt.Sprint(want) {
								t.Errorf("slot map %v, want %v", m.SlotMap, want)
							}
							if m.NeedsMove() != (name != "canonical") {
								t.Errorf("NeedsMove = %v", m.NeedsMove())
							}
						})
					}
				}
			}
		}
	}
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
		{3, TypeEFISystem, 64, 204863},
		{1, TypeBasicData, 206848, 206848 + bank - 1},
		{2, TypeBasicData, 206848 + bank, 206848 + 2*bank - 1},
		{4, TypeVMFSL, 206848 + 2*bank, 60 * 1024 * 2048},
	}
	m, err := Recognize(rgTable(512, 64*gib, 64*gib, es))
	if err != nil {
		t.Fatal(err)
	}
	if m.Family != "7.x" || m.Confidence != ConfidenceStructural || fmt.Sprint(m.SlotMap) != fmt.Sprint(map[int]int{3: 1, 1: 5, 2: 6, 4: 7}) {
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
		{"linux", []rgEntry{{1, TypeEFISystem, 2048, 1050623}, {2, linux, 1050624, 16777182}}, "not an ESXi boot disk layout"},
		{"extra-partition", append(append([]rgEntry(nil), es5...), rgEntry{4, linux, 16777216 - 40, 16777216 - 35}), "not an ESXi"},
		{"moved-bootbank", func() []rgEntry {
			es := append([]rgEntry(nil), es5...)
			for i := range es {
				if es[i].slot == 5 {
					es[i].first += 8
				}
			}
			return es
		}(), "not an ESXi"},
		{"overlap", []rgEntry{{1, TypeEFISystem, 64, 8191}, {5, TypeBasicData, 8000, 520191}}, "overlap"},
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
	// No usable copy at all.
	if _, err := Recognize(&gpt.Table{SectorSize: 512, DiskSize: 8 * gib}); err == nil {
		t.Error("a table without a valid copy was recognised")
	}
}
