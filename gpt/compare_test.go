package gpt_test

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// swap exchanges two 128-byte entries (1-based slots).
func swap(arr []byte, a, b int) {
	x := append([]byte(nil), arr[(a-1)*128:a*128]...)
	copy(arr[(a-1)*128:], arr[(b-1)*128:b*128])
	copy(arr[(b-1)*128:], x)
}

func moves(d *gpt.Diff) string {
	var s []string
	for _, m := range d.Moves {
		s = append(s, fmt.Sprintf("%d>%d", m.From, m.To))
	}
	return strings.Join(s, " ")
}

// TestCompareIncident is the incident: an ESXi 5.0 table on an 8 GiB
// image, raw-copied to 12 GiB, its array compacted by an independent
// writer with valid CRCs.
func TestCompareIncident(t *testing.T) {
	dir := t.TempDir()
	const size = 8 * gib
	parts := esxiLayout(t, "5.0", size, 512)
	ref := gpttest.SgdiskImage(t, dir, size, parts)
	bad := gpttest.Incident(t, ref, dir, size, 12*gib)
	if out := gpttest.Run(t, "sgdisk", "-v", bad); !strings.Contains(out, "No problems found") {
		t.Fatalf("the damaged image should look fine to sgdisk:\n%s", out)
	}
	rt, tt := readFile(t, ref, 512), readFile(t, bad, 512)
	if c := allCodes(tt); len(c) != 0 {
		t.Fatalf("the compacted table has valid CRCs and a backup at the end; problems: %v", tt.Problems)
	}
	d := gpt.Compare(rt, tt)
	if d.Same() || d.Identical || d.Layout != gpt.LayoutCompacted {
		t.Errorf("same %v identical %v layout %q", d.Same(), d.Identical, d.Layout)
	}
	if got := moves(d); got != "5>4 6>5 7>6 8>7" {
		t.Errorf("moves %s", got)
	}
	if len(d.Added)+len(d.Removed)+len(d.Changed) != 0 || len(d.MatchedByPosition) != 0 {
		t.Errorf("added %v removed %v changed %v by position %v", d.Added, d.Removed, d.Changed, d.MatchedByPosition)
	}
	for _, h := range d.Header {
		if !h.Expected {
			t.Errorf("unexpected header change %+v", h)
		}
	}
	for _, want := range []string{"entries 5,6,7,8 moved up one slot", "compacted", "ESXi looks for its boot banks at entries 5 and 6 and will not boot correctly"} {
		if !strings.Contains(d.Verdict, want) {
			t.Errorf("verdict %q lacks %q", d.Verdict, want)
		}
	}
	if len(d.Slots) != 8 || d.Slots[3].Ref != nil || d.Slots[3].Target == nil || d.Slots[3].Target.TypeName != "Basic Data" || d.Slots[3].Note != "was slot 5" {
		t.Errorf("slot rows: %+v", d.Slots[3])
	}
	// The other way round the partitions moved down and gaps opened.
	back := gpt.Compare(tt, rt)
	if back.Layout != gpt.LayoutRenumbered || moves(back) != "4>5 5>6 6>7 7>8" || !strings.Contains(back.Verdict, "moved down one slot") {
		t.Errorf("reverse: %s %s %q", back.Layout, moves(back), back.Verdict)
	}
}

// TestCompare covers each classification and field change, on 512- and
// 4096-byte sector tables.
func TestCompare(t *testing.T) {
	type tcase struct {
		name     string
		edit     func(arr []byte)
		layout   string
		moves    string
		same     bool
		verdict  string
		check    func(t *testing.T, d *gpt.Diff)
		changed  string // "slot:field,field"
		added    []int
		removed  []int
		unusedOK []int
	}
	cases := []tcase{
		{name: "identical", edit: func([]byte) {}, layout: gpt.LayoutSame, same: true, verdict: "match slot for slot"},
		{name: "junk in unused slot", edit: func(a []byte) { copy(a[11*128+20:], "junk") }, layout: gpt.LayoutSame, same: true,
			verdict: "leftover bytes", unusedOK: []int{12}},
		{name: "compacted", edit: func(a []byte) { gpttest.Compact(a, 128) }, layout: gpt.LayoutCompacted, moves: "5>4 6>5 7>6 8>7",
			verdict: "entries 5,6,7,8 moved up one slot: the entry array was compacted"},
		{name: "sorted", edit: gpttest.Sort, layout: gpt.LayoutSorted, moves: "2>6 3>7 5>2 6>3 7>4 8>5",
			verdict: "sorted by start sector"},
		{name: "reordered", edit: func(a []byte) { swap(a, 5, 6) }, layout: gpt.LayoutReordered, moves: "5>6 6>5",
			verdict: "reordered; the partitions themselves are unchanged, only their numbers"},
		{name: "renumbered", edit: func(a []byte) { swap(a, 2, 20) }, layout: gpt.LayoutRenumbered, moves: "2>20",
			verdict: "entry 2 moved down 18 slots: the partitions were renumbered"},
		{name: "guids regenerated and compacted", edit: func(a []byte) {
			for i := 0; i < 9; i++ {
				a[i*128+16+5] ^= 0x55
			}
			gpttest.Compact(a, 128)
		}, layout: gpt.LayoutCompacted, moves: "5>4 6>5 7>6 8>7",
			check: func(t *testing.T, d *gpt.Diff) {
				if len(d.MatchedByPosition) != len(d.Mapping) || len(d.Changed) != len(d.Mapping) || d.Changed[0].Fields[0].Field != "unique" || len(d.Mapping) < 7 {
					t.Errorf("by position %v changed %+v", d.MatchedByPosition, d.Changed)
				}
			}},
		{name: "attrs", edit: func(a []byte) { a[48] = 0 }, layout: gpt.LayoutSame, changed: "1:attrs", verdict: "partition 1 changed: attributes 0000000000000004 -> 0000000000000000"},
		{name: "name", edit: func(a []byte) { copy(a[4*128+56:], "b\x00") }, layout: gpt.LayoutSame, changed: "5:name", verdict: `partition 5 changed: name "" -> "b"`},
		{name: "name tail", edit: func(a []byte) { copy(a[6*128+100:], "xy") }, layout: gpt.LayoutSame, changed: "7:name-tail"},
		{name: "type", edit: func(a []byte) { a[7*128] ^= 1 }, layout: gpt.LayoutSame, changed: "8:type"},
		{name: "last grown", edit: func(a []byte) {
			binary.LittleEndian.PutUint64(a[1*128+40:], binary.LittleEndian.Uint64(a[1*128+40:])+8)
		}, layout: gpt.LayoutSame, changed: "2:last"},
		{name: "moved and first changed", edit: func(a []byte) {
			binary.LittleEndian.PutUint64(a[6*128+32:], binary.LittleEndian.Uint64(a[6*128+32:])+8)
			swap(a, 7, 10)
		}, layout: gpt.LayoutRenumbered, moves: "7>10", changed: "7:first"},
		{name: "removed", edit: func(a []byte) { clear(a[7*128 : 8*128]) }, layout: gpt.LayoutSame, removed: []int{8}, verdict: "partition 8 (Basic Data, sectors "},
		{name: "added", edit: func(a []byte) {
			copy(a[10*128:], a[7*128:8*128])
			a[10*128+16] ^= 0xFF
			binary.LittleEndian.PutUint64(a[10*128+32:], 40)
			binary.LittleEndian.PutUint64(a[10*128+40:], 63)
		}, layout: gpt.LayoutSame, added: []int{11}, verdict: "the target has a partition 11"},
	}
	for _, ss := range []int{512, 4096} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%d/%s", ss, tc.name), func(t *testing.T) {
				dir := t.TempDir()
				size, v := 8*gib, "5.0"
				if ss == 4096 {
					size, v = 12*gib, "6.7" // slots 1,5,6,7,8,9,2,3 in disk order
				}
				parts := esxiLayout(t, v, size, ss)
				var ref, tgt string
				if ss == 512 {
					ref, tgt = gpttest.SgdiskImage(t, dir, size, parts), gpttest.SgdiskImage(t, t.TempDir(), size, parts)
				} else {
					ref, tgt = gpttest.Sparse(t, dir, "ref.img", size), gpttest.Sparse(t, dir, "tgt.img", size)
					gpttest.NewTable(t, ss, size, parts).Write(t, ref)
					gpttest.NewTable(t, ss, size, parts).Write(t, tgt)
				}
				gpttest.EditArrays(t, tgt, ss, tc.edit)
				rt, tt := readFile(t, ref, ss), readFile(t, tgt, ss)
				d := gpt.Compare(rt, tt)
				t.Logf("verdict: %s", d.Verdict)
				wantMoves := tc.moves
				if ss == 4096 && v == "6.7" && tc.name == "sorted" {
					wantMoves = "2>7 3>8 5>2 6>3 7>4 8>5 9>6"
				}
				if ss == 4096 && tc.name == "compacted" || ss == 4096 && tc.name == "guids regenerated and compacted" {
					wantMoves = "5>4 6>5 7>6 8>7 9>8"
				}
				if d.Layout != tc.layout || moves(d) != wantMoves || d.Same() != tc.same {
					t.Errorf("layout %q moves %q same %v; want %q %q %v (verdict %q)", d.Layout, moves(d), d.Same(), tc.layout, wantMoves, tc.same, d.Verdict)
				}
				if tc.verdict != "" && !strings.Contains(d.Verdict, tc.verdict) && !(ss == 4096 && strings.Contains(tc.verdict, "5,6,7,8")) {
					t.Errorf("verdict %q lacks %q", d.Verdict, tc.verdict)
				}
				var ch []string
				for _, c := range d.Changed {
					var f []string
					for _, x := range c.Fields {
						f = append(f, x.Field)
					}
					ch = append(ch, fmt.Sprintf("%d:%s", c.RefSlot, strings.Join(f, ",")))
				}
				if tc.check == nil && strings.Join(ch, " ") != tc.changed {
					t.Errorf("changed %v, want %q", ch, tc.changed)
				}
				if !slices.Equal(d.Added, tc.added) || !slices.Equal(d.Removed, tc.removed) || !slices.Equal(d.UnusedDiffer, tc.unusedOK) {
					t.Errorf("added %v removed %v unused %v", d.Added, d.Removed, d.UnusedDiffer)
				}
				if d.Identical != (tc.name == "identical") {
					t.Errorf("identical %v", d.Identical)
				}
				if tc.check != nil {
					tc.check(t, d)
				}
			})
		}
	}
}

// TestCompareHeaders: a raw copy onto a bigger disk differs only in what
// a bigger disk changes; other header differences matter.
func TestCompareHeaders(t *testing.T) {
	dir := t.TempDir()
	const size = 8 * gib
	parts := esxiLayout(t, "5.0", size, 512)
	ref := gpttest.SgdiskImage(t, dir, size, parts)
	rt := readFile(t, ref, 512)

	grown := gpttest.Sparse(t, dir, "grown.img", 12*gib)
	gpttest.CopyRegions(t, ref, grown, gpttest.Regions(size, 512)...)
	d := gpt.Compare(rt, readFile(t, grown, 512))
	if !d.Same() || !d.Identical || !strings.Contains(d.Verdict, "match slot for slot") || !strings.Contains(d.Verdict, "not at the end of the disk") {
		t.Errorf("raw copy on a bigger disk: same %v identical %v verdict %q header %+v", d.Same(), d.Identical, d.Verdict, d.Header)
	}
	if !slices.ContainsFunc(d.Findings, func(p gpt.Problem) bool { return p.Code == gpt.CodeBackupNotAtEnd }) {
		t.Errorf("findings %v", d.Findings)
	}

	for _, tc := range []struct {
		name  string
		off   int
		val   uint64
		field string
	}{
		{"disk guid", 0x38, 0x1234, "disk GUID"},
		{"first usable", 0x28, 40, "first usable LBA"},
		{"last usable shrunk", 0x30, 16000000, "last usable LBA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt := gpttest.SgdiskImage(t, t.TempDir(), size, parts)
			for _, lba := range []uint64{1, uint64(size/512 - 1)} {
				gpttest.RewriteCopy(t, tgt, 512, lba, func(h, a []byte) { binary.LittleEndian.PutUint64(h[tc.off:], tc.val) })
			}
			d := gpt.Compare(rt, readFile(t, tgt, 512))
			if d.Same() || !slices.ContainsFunc(d.Header, func(h gpt.HeaderChange) bool { return h.Field == tc.field && !h.Expected }) ||
				!strings.Contains(d.Verdict, "the "+tc.field+" differs") {
				t.Errorf("same %v header %+v verdict %q", d.Same(), d.Header, d.Verdict)
			}
		})
	}

	// A damaged target is never "same".
	tgt := gpttest.SgdiskImage(t, t.TempDir(), size, parts)
	gpttest.RewriteCopy(t, tgt, 512, uint64(size/512-1), func(h, a []byte) { a[0] ^= 1 })
	d = gpt.Compare(rt, readFile(t, tgt, 512))
	if d.Same() || !d.TargetDamaged || !strings.Contains(d.Verdict, "damaged") {
		t.Errorf("backup array differs: same %v verdict %q", d.Same(), d.Verdict)
	}
}
