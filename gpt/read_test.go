package gpt_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

const gib = int64(1) << 30

func codes(ps []gpt.Problem) []string {
	var c []string
	for _, p := range ps {
		c = append(c, p.Code)
	}
	return c
}

func allCodes(t *gpt.Table) []string {
	c := codes(t.Problems)
	for _, cp := range []*gpt.Copy{t.Primary, t.Backup} {
		if cp != nil {
			c = append(c, codes(cp.Problems)...)
		}
	}
	return c
}

func readFile(t *testing.T, path string, ss int) *gpt.Table {
	t.Helper()
	tb, err := gpt.ReadFile(path, ss)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// checkSlots compares the used slots of tb with parts, slot for slot.
func checkSlots(t *testing.T, tb *gpt.Table, parts []gpttest.Part) {
	t.Helper()
	want := map[int]gpttest.Part{}
	for _, p := range parts {
		want[p.Slot] = p
	}
	slots := tb.Slots()
	if len(slots) != 128 {
		t.Fatalf("%d slots, want 128", len(slots))
	}
	for i, s := range slots {
		if s.Index != i+1 {
			t.Fatalf("slot %d has index %d", i+1, s.Index)
		}
		p, ok := want[s.Index]
		if s.Used() != ok {
			t.Errorf("slot %d used=%v, want %v", s.Index, s.Used(), ok)
			continue
		}
		if !ok {
			continue
		}
		e := s.Entry()
		if e.Type.String() != p.Type || e.First != p.First || e.Last != p.Last || e.Attrs != p.Attrs || e.Name != p.Name {
			t.Errorf("slot %d = %s %d-%d attrs %x %q, want %s %d-%d attrs %x %q", s.Index, e.Type, e.First, e.Last, e.Attrs, e.Name, p.Type, p.First, p.Last, p.Attrs, p.Name)
		}
	}
}

// crossCheck compares tb with what sgdisk (512-byte sectors only) and
// sfdisk read from the same image.
func crossCheck(t *testing.T, path string, tb *gpt.Table) {
	t.Helper()
	var used []gpt.Slot
	for _, s := range tb.Slots() {
		if s.Used() {
			used = append(used, s)
		}
	}
	if tb.SectorSize == 512 {
		sg := gpttest.SgdiskList(t, path)
		if len(sg) != len(used) {
			t.Fatalf("sgdisk -p lists %d partitions, we read %d", len(sg), len(used))
		}
		for i, p := range sg {
			e := used[i].Entry()
			if p.Num != used[i].Index || p.First != e.First || p.Last != e.Last {
				t.Errorf("sgdisk -p: %d %d-%d %q; we: %d %d-%d %q", p.Num, p.First, p.Last, p.Name, used[i].Index, e.First, e.Last, e.Name)
			}
			info := gpttest.SgdiskInfo(t, path, p.Num)
			if !strings.HasPrefix(info["Partition GUID code"], e.Type.String()) || info["Partition unique GUID"] != e.Unique.String() ||
				info["Attribute flags"] != fmt.Sprintf("%016X", e.Attrs) || info["Partition name"] != "'"+e.Name+"'" {
				t.Errorf("sgdisk -i %d: %v; we: type %s unique %s attrs %016X", p.Num, info, e.Type, e.Unique, e.Attrs)
			}
		}
		if out := gpttest.Run(t, "sgdisk", "-v", path); !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v finds problems:\n%s", out)
		}
	}
	if tb.SectorSize != 512 {
		// sfdisk has no sector size option for files; fdisk -b has.
		fd := gpttest.FdiskList(t, path, tb.SectorSize)
		if len(fd) != len(used) {
			t.Fatalf("fdisk -b %d lists %d partitions, we read %d", tb.SectorSize, len(fd), len(used))
		}
		for i, p := range fd {
			e := used[i].Entry()
			if p.Slot != used[i].Index || p.First != e.First || p.Last != e.Last || p.Type != e.Type.String() || p.UUID != e.Unique.String() {
				t.Errorf("fdisk: %+v; we: slot %d %+v", p, used[i].Index, e)
			}
		}
		return
	}
	sf := gpttest.SfdiskJSON(t, path).PartitionTable
	h := tb.Primary.Header
	if sf.Label != "gpt" || sf.ID != h.DiskGUID.String() || sf.FirstLBA != h.FirstUsableLBA || sf.LastLBA != h.LastUsableLBA {
		t.Errorf("sfdisk: %s %s %d-%d; we: %s %d-%d", sf.Label, sf.ID, sf.FirstLBA, sf.LastLBA, h.DiskGUID, h.FirstUsableLBA, h.LastUsableLBA)
	}
	if len(sf.Partitions) != len(used) {
		t.Fatalf("sfdisk lists %d partitions, we read %d", len(sf.Partitions), len(used))
	}
	for i, p := range sf.Partitions {
		e := used[i].Entry()
		if gpttest.SfdiskSlot(p.Node) != used[i].Index || p.Start != e.First || p.Size != e.Sectors() || p.Type != e.Type.String() || p.UUID != e.Unique.String() || p.Name != e.Name {
			t.Errorf("sfdisk: %+v; we: slot %d %+v", p, used[i].Index, e)
		}
	}
}

// TestReadESXi reads ESXi layouts of every version written by sgdisk
// (512-byte sectors) and by the independent encoder (4096-byte sectors),
// and checks them against the layout, sgdisk and sfdisk.
func TestReadESXi(t *testing.T) {
	for _, tc := range []struct {
		v    string
		size int64
		ss   int
	}{
		{"5.0", 8 * gib, 512},
		{"5.5", 8 * gib, 512},
		{"6.0", 12 * gib, 512},
		{"6.0", 2 * gib, 512}, // small medium: no scratch, no datastore
		{"6.7", 32 * gib, 512},
		{"7.0", 200 * gib, 512},
		{"6.7", 32 * gib, 4096},
		{"7.0", 16 * gib, 4096},
	} {
		t.Run(fmt.Sprintf("%s-%dG-%d", tc.v, tc.size/gib, tc.ss), func(t *testing.T) {
			parts := esxiLayout(t, tc.v, tc.size, tc.ss)
			dir := t.TempDir()
			var path string
			if tc.ss == 512 {
				path = gpttest.SgdiskImage(t, dir, tc.size, parts)
			} else {
				path = gpttest.Sparse(t, dir, "4k.img", tc.size)
				gpttest.NewTable(t, tc.ss, tc.size, parts).Write(t, path)
			}
			tb := readFile(t, path, tc.ss)
			if c := allCodes(tb); len(c) != 0 {
				t.Fatalf("problems on a good table: %v", tb.Problems)
			}
			if tb.Primary.HeaderLBA != 1 || tb.Backup.HeaderLBA != tb.LastLBA() || tb.StrayBackup != nil {
				t.Errorf("headers at %d and %d, last LBA %d", tb.Primary.HeaderLBA, tb.Backup.HeaderLBA, tb.LastLBA())
			}
			checkSlots(t, tb, parts)
			crossCheck(t, path, tb)
			var maxLast uint64
			for _, p := range parts {
				maxLast = max(maxLast, p.Last)
			}
			if got := tb.LastUsedLBA(); got != maxLast {
				t.Errorf("LastUsedLBA = %d, want %d", got, maxLast)
			}
			// The same image read with the other sector size has no GPT.
			other := 4096
			if tc.ss == 4096 {
				other = 512
			}
			if tb2 := readFile(t, path, other); tb2.Primary != nil || tb2.Slots() != nil || !slices.Contains(codes(tb2.Problems), gpt.CodePrimaryMissing) {
				t.Errorf("read with %d-byte sectors: primary %v, problems %v", other, tb2.Primary != nil, tb2.Problems)
			}
			if g := gpt.GuessSectorSize(path); g != tc.ss {
				t.Errorf("GuessSectorSize = %d, want %d", g, tc.ss)
			}
		})
	}
}

// TestReadNamesAttrsJunk keeps names, attributes, bytes after a name's NUL
// and junk in unused slots byte for byte.
func TestReadNamesAttrsJunk(t *testing.T) {
	dir := t.TempDir()
	parts := []gpttest.Part{
		{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 64, Last: 8191, Name: "EFI system", Attrs: 1<<2 | 1<<60},
		{Slot: 3, Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", First: 8192, Last: 16383, Name: "données ☃"},
		{Slot: 2, Type: "AA31E02A-400F-11DB-9590-000C2911D1B8", First: 16384, Last: 100000, Name: strings.Repeat("n", 36)},
	}
	path := gpttest.SgdiskImage(t, dir, 64<<20, parts)
	junk4 := bytes.Repeat([]byte{0}, 128)
	// Junk in the unique GUID and name of an unused slot (zero type GUID,
	// zero LBAs: sgdisk counts an entry with non-zero LBAs as used).
	copy(junk4[16:], "unused slot junk")
	copy(junk4[60:], "and a name in an unused slot")
	var tail []byte
	for _, lba := range []uint64{1, uint64(64<<20)/512 - 1} {
		gpttest.RewriteCopy(t, path, 512, lba, func(hdr, arr []byte) {
			copy(arr[3*128:], junk4)                 // slot 4
			copy(arr[2*128+56+20:], "\x00\x00AFTER") // after the NUL of slot 3's name
			tail = append([]byte(nil), arr...)
		})
	}
	tb := readFile(t, path, 512)
	if c := allCodes(tb); len(c) != 0 {
		t.Fatalf("problems: %v", c)
	}
	s := tb.Slots()
	if !bytes.Equal(tb.Primary.Array, tail) || !bytes.Equal(tb.Backup.Array, tail) {
		t.Fatal("arrays not kept byte for byte")
	}
	if s[3].Used() || !bytes.Equal(s[3].Raw, junk4) {
		t.Errorf("slot 4: used=%v raw %q", s[3].Used(), s[3].Raw)
	}
	if e := s[2].Entry(); e.Name != "données ☃" {
		t.Errorf("slot 3 name %q", e.Name)
	}
	checkSlots(t, tb, parts)
	crossCheck(t, path, tb)
}

// TestReadGrownShrunk: the GPT regions of an 8 GiB ESXi 5.0 disk copied
// raw onto a 12 GiB and a 6 GiB one.
func TestReadGrownShrunk(t *testing.T) {
	dir := t.TempDir()
	const size = 8 * gib
	parts := esxiLayout(t, "5.0", size, 512)
	src := gpttest.SgdiskImage(t, dir, size, parts)
	oldLast := uint64(size/512 - 1)

	grown := gpttest.Sparse(t, dir, "grown.img", 12*gib)
	gpttest.CopyRegions(t, src, grown, gpttest.Regions(size, 512)...)
	tb := readFile(t, grown, 512)
	c := allCodes(tb)
	for _, want := range []string{gpt.CodeBackupNotAtEnd, gpt.CodeMBRSize} {
		if !slices.Contains(c, want) {
			t.Errorf("grown: no %s in %v", want, tb.Problems)
		}
	}
	if !tb.Primary.Valid() || !tb.Backup.Valid() || tb.Backup.HeaderLBA != oldLast {
		t.Errorf("grown: primary valid %v, backup valid %v at %d (want %d)", tb.Primary.Valid(), tb.Backup.Valid(), tb.Backup.HeaderLBA, oldLast)
	}
	if slices.Contains(c, gpt.CodeHeadersDiffer) || slices.Contains(c, gpt.CodeArraysDiffer) || slices.Contains(c, gpt.CodeUsableRange) {
		t.Errorf("grown: unexpected problems %v", tb.Problems)
	}
	checkSlots(t, tb, parts)

	// Primary damaged as well (a disk GUID byte): the stranded backup is
	// still found through the primary's AlternateLBA, validated on its own.
	f, _ := os.OpenFile(grown, os.O_RDWR, 0)
	gpttest.WriteAt(t, f, []byte{0x5A}, 512+0x38)
	f.Close()
	tb = readFile(t, grown, 512)
	if tb.Primary.Valid() || !slices.Contains(codes(tb.Primary.Problems), gpt.CodeHeaderCRC) {
		t.Errorf("damaged primary: %v", tb.Primary.Problems)
	}
	if !tb.Backup.Valid() || tb.Backup.HeaderLBA != oldLast || tb.Best() != tb.Backup {
		t.Errorf("stranded backup not found behind a damaged primary: %v", tb.Problems)
	}
	checkSlots(t, tb, parts)
	// AlternateLBA corrupted to point into partition data: what is there
	// is not a header and is not trusted; the backup is still found where
	// the protective MBR says the old disk ended.
	f, _ = os.OpenFile(grown, os.O_RDWR, 0)
	gpttest.WriteAt(t, f, []byte{0x10}, 512+0x20+2)
	f.Close()
	tb = readFile(t, grown, 512)
	if !tb.Backup.Valid() || tb.Backup.HeaderLBA != oldLast {
		t.Errorf("backup not found by the MBR hint: %v", tb.Problems)
	}
	// Without the MBR hint nothing is found, and nothing is trusted.
	f, _ = os.OpenFile(grown, os.O_RDWR, 0)
	gpttest.WriteAt(t, f, make([]byte, 16), 446)
	f.Close()
	tb = readFile(t, grown, 512)
	if tb.Backup.Valid() || tb.Slots() != nil {
		t.Errorf("backup found at %d through a corrupt pointer", tb.Backup.HeaderLBA)
	}

	// Primary zeroed on the bigger disk: nothing points to the stranded
	// backup but the protective MBR's size field, which still says 8 GiB.
	gone := gpttest.Sparse(t, dir, "gone.img", 12*gib)
	gpttest.CopyRegions(t, src, gone, gpttest.Regions(size, 512)...)
	f, _ = os.OpenFile(gone, os.O_RDWR, 0)
	gpttest.WriteAt(t, f, make([]byte, 512), 512)
	f.Close()
	tb = readFile(t, gone, 512)
	if tb.Primary != nil || !tb.Backup.Valid() || tb.Backup.HeaderLBA != oldLast || !slices.Contains(codes(tb.Problems), gpt.CodeBackupNotAtEnd) {
		t.Errorf("primary gone on a grown disk: %v", tb.Problems)
	}
	checkSlots(t, tb, parts)

	// Primary zeroed on an image of the original size: the backup at the
	// end is used.
	same := gpttest.Sparse(t, dir, "same.img", size)
	gpttest.CopyRegions(t, src, same, gpttest.Regions(size, 512)...)
	f, _ = os.OpenFile(same, os.O_RDWR, 0)
	gpttest.WriteAt(t, f, make([]byte, 512), 512)
	f.Close()
	tb = readFile(t, same, 512)
	if tb.Primary != nil || !tb.Backup.Valid() || tb.Backup.HeaderLBA != oldLast || tb.Best() != tb.Backup {
		t.Fatalf("primary gone: %v", tb.Problems)
	}
	checkSlots(t, tb, parts)

	shrunk := gpttest.Sparse(t, dir, "shrunk.img", 6*gib)
	gpttest.CopyRegions(t, src, shrunk, [2]int64{0, 34 * 512})
	tb = readFile(t, shrunk, 512)
	c = allCodes(tb)
	for _, want := range []string{gpt.CodeBackupMissing, gpt.CodeAltLBA, gpt.CodeUsableRange, gpt.CodeEntryRange, gpt.CodeMBRSize} {
		if !slices.Contains(c, want) {
			t.Errorf("shrunk: no %s in %v", want, c)
		}
	}
	if !tb.Primary.Valid() || tb.Slots() == nil {
		t.Errorf("shrunk: primary should stay usable: %v", tb.Primary.Problems)
	}
}

// TestReadStrayBackup: a grown disk with a valid backup both at the old
// end (where the primary points) and at the new end.
func TestReadStrayBackup(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	parts := []gpttest.Part{{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 64, Last: 8191}}
	src := gpttest.SgdiskImage(t, dir, size, parts)
	big := gpttest.Sparse(t, dir, "big.img", 2*size)
	gpttest.CopyRegions(t, src, big, gpttest.Regions(size, 512)...)
	// Put the backup at the new end as well.
	b := make([]byte, 33*512)
	in, _ := os.Open(src)
	in.ReadAt(b, size-33*512)
	in.Close()
	f, _ := os.OpenFile(big, os.O_RDWR, 0)
	gpttest.WriteAt(t, f, b, 2*size-33*512)
	f.Close()
	newLast := uint64(2*size/512 - 1)
	gpttest.RewriteCopy(t, big, 512, newLast, func(hdr, arr []byte) {
		binary.LittleEndian.PutUint64(hdr[0x18:], newLast)
		binary.LittleEndian.PutUint64(hdr[0x48:], newLast-32)
	})
	tb := readFile(t, big, 512)
	if tb.Backup == nil || tb.StrayBackup == nil || tb.Backup.HeaderLBA != size/512-1 || tb.StrayBackup.HeaderLBA != newLast {
		t.Fatalf("backup/stray: %v", tb.Problems)
	}
	if c := codes(tb.Problems); !slices.Contains(c, gpt.CodeStrayBackup) || !slices.Contains(c, gpt.CodeBackupNotAtEnd) {
		t.Errorf("problems %v", c)
	}
}

// TestReadDamage: each kind of damage is reported with its code, and an
// absurd header never makes Read fail or allocate much.
func TestReadDamage(t *testing.T) {
	const size = 16 << 20
	const last = size/512 - 1
	parts := []gpttest.Part{
		{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 64, Last: 8191},
		{Slot: 2, Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", First: 8192, Last: 16383},
	}
	u32 := func(off int, v uint32) func(h, a []byte) {
		return func(h, a []byte) { binary.LittleEndian.PutUint32(h[off:], v) }
	}
	u64 := func(off int, v uint64) func(h, a []byte) {
		return func(h, a []byte) { binary.LittleEndian.PutUint64(h[off:], v) }
	}
	entry := func(slot, off int, v uint64) func(h, a []byte) {
		return func(h, a []byte) { binary.LittleEndian.PutUint64(a[(slot-1)*128+off:], v) }
	}
	for _, tc := range []struct {
		name   string
		lba    uint64 // header to damage
		edit   func(h, a []byte)
		crcFix bool   // recompute CRCs after the edit
		want   string // problem code
		usable bool   // table still has usable slots
	}{
		{"revision", 1, u32(0x08, 0x00020000), true, gpt.CodeRevision, true},
		{"header size small", 1, u32(0x0C, 50), true, gpt.CodeHeaderSize, true},
		{"header size huge", 1, u32(0x0C, 1<<30), true, gpt.CodeHeaderSize, true},
		{"header crc", 1, u32(0x10, 0x12345678), false, gpt.CodeHeaderCRC, true},
		{"array crc", 1, u32(0x58, 0x12345678), false, gpt.CodeArrayCRC, true},
		{"my lba", 1, u64(0x18, 7), true, gpt.CodeMyLBA, true},
		{"entry size 100", 1, u32(0x54, 100), true, gpt.CodeEntrySize, true},
		{"entry size 0", 1, u32(0x54, 0), true, gpt.CodeEntrySize, true},
		{"entry size 2^31", 1, u32(0x54, 1<<31), true, gpt.CodeEntrySize, true},
		{"entry count 0", 1, u32(0x50, 0), true, gpt.CodeEntryCount, true},
		{"entry count 2^30", 1, u32(0x50, 1<<30), true, gpt.CodeEntryCount, true},
		{"entry count max", 1, u32(0x50, 0xFFFFFFFF), true, gpt.CodeEntryCount, true},
		{"array past end", 1, u64(0x48, last-3), true, gpt.CodeArrayRange, true},
		{"array at huge LBA", 1, u64(0x48, 1<<62), true, gpt.CodeArrayRange, true},
		{"array at 0", 1, u64(0x48, 0), true, gpt.CodeArrayRange, true},
		{"usable inverted", 1, u64(0x28, 40000), true, gpt.CodeUsableRange, true},
		{"backup alternate", last, u64(0x20, 5), true, gpt.CodeAltLBA, true},
		{"backup my lba", last, u64(0x18, 1), true, gpt.CodeMyLBA, true},
		{"backup array crc", last, u32(0x58, 1), false, gpt.CodeArrayCRC, true},
		{"headers differ", last, u64(0x28, 40), true, gpt.CodeHeadersDiffer, true},
		{"arrays differ", last, entry(2, 40, 16000), true, gpt.CodeArraysDiffer, true},
		{"entry past usable", 1, entry(2, 40, last-1), true, gpt.CodeEntryRange, true},
		{"entry past disk", 1, entry(2, 40, 1<<40), true, gpt.CodeEntryRange, true},
		{"entry inverted", 1, entry(2, 32, 20000), true, gpt.CodeEntryRange, true},
		{"overlap", 1, entry(2, 32, 8000), true, gpt.CodeOverlap, true},
		{"duplicate guid", 1, func(h, a []byte) { copy(a[128+16:128+32], a[16:32]) }, true, gpt.CodeDupGUID, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := gpttest.SgdiskImage(t, t.TempDir(), size, parts)
			if tc.crcFix {
				gpttest.RewriteCopy(t, path, 512, tc.lba, tc.edit)
			} else {
				f, _ := os.OpenFile(path, os.O_RDWR, 0)
				h := make([]byte, 512)
				f.ReadAt(h, int64(tc.lba)*512)
				tc.edit(h, make([]byte, 128*128))
				gpttest.WriteAt(t, f, h, int64(tc.lba)*512)
				f.Close()
			}
			tb := readFile(t, path, 512)
			if c := allCodes(tb); !slices.Contains(c, tc.want) {
				t.Errorf("no %s in %v", tc.want, tb.Problems)
			}
			if (tb.Slots() != nil) != tc.usable {
				t.Errorf("usable slots %v, want %v", tb.Slots() != nil, tc.usable)
			}
			for _, cp := range []*gpt.Copy{tb.Primary, tb.Backup} {
				if cp != nil && len(cp.Array) > gpt.MaxArrayBytes {
					t.Errorf("%s array of %d bytes", cp.Which, len(cp.Array))
				}
			}
		})
	}
}

// TestReadMBR checks the protective MBR findings.
func TestReadMBR(t *testing.T) {
	const size = 16 << 20
	parts := []gpttest.Part{{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 64, Last: 8191}}
	for _, tc := range []struct {
		name string
		off  int
		b    []byte
		want string
	}{
		{"no 55AA", 510, []byte{0, 0}, gpt.CodeMBRSignature},
		{"no EE", 446 + 4, []byte{0x83}, gpt.CodeMBRNoProtective},
		{"size", 446 + 12, []byte{1, 2, 0, 0}, gpt.CodeMBRSize},
		{"start", 446 + 8, []byte{2}, gpt.CodeMBRStart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := gpttest.SgdiskImage(t, t.TempDir(), size, parts)
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			gpttest.WriteAt(t, f, tc.b, int64(tc.off))
			f.Close()
			tb := readFile(t, path, 512)
			if c := codes(tb.Problems); len(c) != 1 || c[0] != tc.want {
				t.Errorf("problems %v, want only %s", tb.Problems, tc.want)
			}
		})
	}
}

type shortReader struct {
	r     io.ReaderAt
	limit int64
}

func (s shortReader) ReadAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > s.limit {
		if off >= s.limit {
			return 0, io.EOF
		}
		n, _ := s.r.ReadAt(b[:s.limit-off], off)
		return n, io.EOF
	}
	return s.r.ReadAt(b, off)
}

// TestReadErrors: input that cannot be a disk is an error, not a panic.
func TestReadErrors(t *testing.T) {
	img := make([]byte, 64<<10)
	for _, tc := range []struct {
		name string
		r    io.ReaderAt
		size int64
		ss   int
	}{
		{"sector size 1000", bytes.NewReader(img), int64(len(img)), 1000},
		{"sector size 520", bytes.NewReader(img), int64(len(img)), 520},
		{"two sectors", bytes.NewReader(img[:1024]), 1024, 512},
		{"two 4k sectors", bytes.NewReader(img[:8192]), 8192, 4096},
		{"zero", bytes.NewReader(nil), 0, 512},
		{"negative", bytes.NewReader(nil), -1, 512},
		{"truncated", shortReader{bytes.NewReader(img), 512}, int64(len(img)), 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tb, err := gpt.Read(tc.r, tc.size, tc.ss); err == nil {
				t.Errorf("no error, table %+v", tb)
			}
		})
	}
	// A truncated image whose claimed size passes the header but whose
	// backup region is missing.
	dir := t.TempDir()
	path := gpttest.SgdiskImage(t, dir, 16<<20, []gpttest.Part{{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 64, Last: 8191}})
	data, _ := os.ReadFile(path)
	_, err := gpt.Read(shortReader{bytes.NewReader(data), 8 << 20}, int64(len(data)), 512)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated image: err %v", err)
	}
	if _, err := gpt.ReadFile(filepath.Join(dir, "missing"), 512); err == nil {
		t.Error("missing file: no error")
	}
	if _, err := gpt.ReadFile(dir, 512); err == nil {
		t.Error("directory: no error")
	}
	if _, err := gpt.OpenDevice(path, 1024, false); err == nil {
		t.Error("sector size 1024 accepted")
	}
}

// TestParsePrimary reads the primary from a stream head.
func TestParsePrimary(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		const size = 12 * gib
		v := "5.0"
		if ss == 4096 {
			v = "6.7"
		}
		parts := esxiLayout(t, v, size, ss)
		path := gpttest.Sparse(t, t.TempDir(), "p.img", size)
		gpttest.NewTable(t, ss, size, parts).Write(t, path)
		f, _ := os.Open(path)
		head := make([]byte, 1<<20)
		io.ReadFull(f, head)
		f.Close()
		c, err := gpt.ParsePrimary(head, ss)
		if err != nil {
			t.Fatal(err)
		}
		var maxLast uint64
		for _, p := range parts {
			maxLast = max(maxLast, p.Last)
		}
		if c.LastUsedLBA() != maxLast || len(c.Slots()) != 128 {
			t.Errorf("%d: last used %d, want %d", ss, c.LastUsedLBA(), maxLast)
		}
		arrEnd := 2*ss + 128*128
		if _, err := gpt.ParsePrimary(head[:arrEnd-1], ss); err == nil {
			t.Errorf("%d: short head accepted", ss)
		}
		if _, err := gpt.ParsePrimary(head[:arrEnd], ss); err != nil {
			t.Errorf("%d: exact head: %v", ss, err)
		}
		bad := append([]byte(nil), head...)
		bad[ss+0x10]++
		if _, err := gpt.ParsePrimary(bad, ss); err == nil {
			t.Errorf("%d: bad header CRC accepted", ss)
		}
		if _, err := gpt.ParsePrimary(head[:ss], ss); err == nil {
			t.Errorf("%d: one sector accepted", ss)
		}
		if _, err := gpt.ParsePrimary(make([]byte, 64<<10), ss); err == nil {
			t.Errorf("%d: zeros accepted", ss)
		}
	}
}

// TestReadEntrySize256: entries of 256 bytes (allowed by the spec) keep
// their extra bytes, and a change there is seen by Compare.
func TestReadEntrySize256(t *testing.T) {
	const size = 64 << 20
	parts := []gpttest.Part{
		{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 64, Last: 8191, Name: "a"},
		{Slot: 3, Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", First: 8192, Last: 9000},
	}
	build := func(extra string) string {
		ft := &gpttest.Table{SectorSize: 512, DiskSectors: size / 512, NumEntries: 64, Array: make([]byte, 64*256), DiskGUID: "0A0B0C0D-1111-4222-8333-444455556666"}
		for i, p := range parts {
			copy(ft.Array[(p.Slot-1)*256:], gpttest.Entry(t, p, i+1))
		}
		copy(ft.Array[128:], extra) // bytes 128-255 of slot 1
		path := gpttest.Sparse(t, t.TempDir(), "e256.img", size)
		ft.Write(t, path)
		return path
	}
	a := readFile(t, build("vendor data"), 512)
	b := readFile(t, build("other data"), 512)
	if c := allCodes(a); len(c) != 0 {
		t.Fatalf("problems: %v", a.Problems)
	}
	s := a.Slots()
	if len(s) != 64 || len(s[0].Raw) != 256 || string(s[0].Raw[128:139]) != "vendor data" || s[0].Entry().Name != "a" || !s[2].Used() {
		t.Fatalf("slots: %d, slot 1 %q", len(s), s[0].Raw)
	}
	d := gpt.Compare(a, b)
	if d.Same() || len(d.Changed) != 1 || d.Changed[0].Fields[0].Field != "name-tail" {
		t.Errorf("changed %+v", d.Changed)
	}
	var buf bytes.Buffer
	if err := gpt.SaveLayout(&buf, a); err != nil {
		t.Fatal(err)
	}
	if a2, err := gpt.LoadLayout(&buf); err != nil || !reflect.DeepEqual(a, a2) {
		t.Errorf("layout round trip: %v", err)
	}
}

// TestReadManyBadEntries: thousands of overlapping, duplicate entries give
// a bounded report, quickly.
func TestReadManyBadEntries(t *testing.T) {
	const size = 64 << 20
	ft := &gpttest.Table{SectorSize: 512, DiskSectors: size / 512, NumEntries: 8192, Array: make([]byte, 8192*128), DiskGUID: "0A0B0C0D-1111-4222-8333-444455556666"}
	e := gpttest.Entry(t, gpttest.Part{Slot: 1, Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", First: 5000, Last: 6000}, 1)
	for i := 0; i < 8192; i++ {
		copy(ft.Array[i*128:], e)
	}
	path := gpttest.Sparse(t, t.TempDir(), "many.img", size)
	ft.Write(t, path)
	tb := readFile(t, path, 512)
	n := map[string]int{}
	for _, p := range tb.Problems {
		n[p.Code]++
	}
	if n[gpt.CodeOverlap] != 17 || n[gpt.CodeDupGUID] != 17 || len(tb.Slots()) != 8192 {
		t.Errorf("problems per code %v, %d slots", n, len(tb.Slots()))
	}
}
