package gpt_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// pfMem is an in-memory disk.
type pfMem struct{ b []byte }

func (m *pfMem) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, bytes.ErrTooLarge
	}
	return copy(p, m.b[off:]), nil
}
func (m *pfMem) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, bytes.ErrTooLarge
	}
	return copy(m.b[off:], p), nil
}
func (m *pfMem) Sync() error { return nil }

// pfSmallDisk is a 256-sector disk with a GPT of 128 entries (hand
// encoded by gpttest), partitions at the given slots, made for a disk of
// madeFor sectors (the backup where that disk ended).
func pfSmallDisk(t testing.TB, slots map[int][2]uint64, madeFor uint64) []byte {
	return pfSmallDiskN(t, slots, madeFor, 128, 256)
}

// pfSmallDiskN is pfSmallDisk with entries entries in the array, on a
// disk of n sectors.
func pfSmallDiskN(t testing.TB, slots map[int][2]uint64, madeFor uint64, entries int, n uint64) []byte {
	ft := &gpttest.Table{SectorSize: 512, DiskSectors: madeFor, NumEntries: entries, Array: make([]byte, entries*128), DiskGUID: "0A0B0C0D-1111-4222-8333-444455556666"}
	for s, r := range slots {
		p := gpttest.Part{Slot: s, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: r[0], Last: r[1]}
		copy(ft.Array[(s-1)*128:], gpttest.Entry(t, p, s))
	}
	return ft.Image(t, n)
}

// FuzzPlanFix feeds arbitrary small disks to PlanFix and Apply and checks
// the invariants: no panic; a plan applies and verifies; nothing is written
// inside a partition of the old or the new table; a second plan on the
// result has nothing left to do.
func FuzzPlanFix(f *testing.F) {
	// Small inputs fuzz well: disks of 48 sectors with 16-entry arrays
	// (4 sectors). TestPlanFixRandomTables covers 128-entry tables.
	const n = 48
	f.Add(pfSmallDiskN(f, map[int][2]uint64{1: {6, 10}, 5: {11, 20}, 6: {21, 30}}, n, 16, n))
	f.Add(pfSmallDiskN(f, map[int][2]uint64{1: {6, 10}, 2: {11, 20}}, 40, 16, n)) // stranded backup
	f.Add(pfSmallDiskN(f, map[int][2]uint64{1: {6, 10}, 2: {11, 30}}, 60, 16, n)) // shrunk but fits
	f.Add(pfSmallDiskN(f, map[int][2]uint64{1: {6, 10}, 2: {11, 50}}, 60, 16, n)) // shrunk, does not fit
	f.Add(pfSmallDiskN(f, map[int][2]uint64{1: {6, 10}, 2: {9, 20}}, n, 16, n))   // overlap
	f.Add(pfSmallDiskN(f, map[int][2]uint64{1: {6, 10}, 2: {11, 20}}, 40, 14, n)) // array ends inside a sector
	f.Fuzz(func(t *testing.T, b []byte) {
		// Any input is a disk: whole sectors, at least 3.
		b = b[:len(b)/512*512]
		if len(b) < 3*512 || len(b) > 256*512 {
			return
		}
		pfPlanFixProperty(t, b, gpt.FixOptions{})
	})
}

// pfPlanFixProperty is FuzzPlanFix's check of one disk, repaired with opt.
func pfPlanFixProperty(t *testing.T, b []byte, opt gpt.FixOptions) {
	n := uint64(len(b) / 512)
	disk := &pfMem{b: bytes.Clone(b)}
	tb, err := gpt.Read(disk, int64(len(b)), 512)
	if err != nil {
		return
	}
	p, err := gpt.PlanFix(tb, opt)
	if err != nil || p.Empty() {
		return
	}
	undo := pfUndoPath(t)
	if err := p.ApplyTo(disk, "mem", int64(len(b)), 512, undo); err != nil {
		t.Fatalf("apply: %v\n%s", err, p)
	}
	// Changed sectors must not be inside any partition, old or new.
	var spans [][2]uint64
	for _, tab := range []*gpt.Table{tb} {
		for _, s := range tab.Slots() {
			if s.Used() {
				spans = append(spans, [2]uint64{s.Entry().First, s.Entry().Last})
			}
		}
	}
	for _, s := range p.Slots() {
		if s.Used() {
			spans = append(spans, [2]uint64{s.Entry().First, s.Entry().Last})
		}
	}
	for lba := uint64(0); lba < n; lba++ {
		if bytes.Equal(b[lba*512:(lba+1)*512], disk.b[lba*512:(lba+1)*512]) {
			continue
		}
		for _, sp := range spans {
			if lba >= sp[0] && lba <= sp[1] {
				t.Fatalf("LBA %d inside a partition (%d-%d) was written\n%s", lba, sp[0], sp[1], p)
			}
		}
	}
	after, err := gpt.Read(disk, int64(len(b)), 512)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := gpt.PlanFix(after, opt)
	if err != nil || !p2.Empty() {
		t.Fatalf("second plan after applying\n%s\nis not empty (%v):\n%s", p, err, p2)
	}
	// And the undo file brings back the bytes exactly.
	u, err := gpt.LoadUndo(undo)
	if err != nil {
		t.Fatal(err)
	}
	if err := gpt.ApplyUndoTo(disk, int64(len(b)), 512, u); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk.b, b) {
		t.Fatal("undo did not restore the disk exactly")
	}
}

// TestPlanFixRandomTables runs FuzzPlanFix's checks on a few hundred
// deterministic random variations of valid small tables (fields changed,
// then CRCs made valid again or not), so that CI exercises the property
// beyond the seeds even without -fuzz. GPT_RANDOM_TABLES=N[:SEED] runs
// N variations (default 400, seed 1).
func TestPlanFixRandomTables(t *testing.T) {
	seeds := [][]byte{
		pfSmallDisk(t, map[int][2]uint64{1: {40, 60}, 5: {61, 100}, 6: {101, 150}}, 256),
		pfSmallDisk(t, map[int][2]uint64{1: {40, 60}, 2: {61, 100}}, 200),
		pfSmallDisk(t, map[int][2]uint64{1: {40, 60}, 2: {61, 180}}, 300),
		pfSmallDiskN(t, map[int][2]uint64{1: {40, 60}, 2: {61, 100}}, 200, 98, 256),
	}
	var refs []*gpt.Table
	for _, sd := range seeds {
		ref, err := gpt.Read(&pfMem{b: sd}, int64(len(sd)), 512)
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	n, seed := 400, int64(1)
	if v := os.Getenv("GPT_RANDOM_TABLES"); v != "" { // "N" or "N:SEED" for a longer run
		fmt.Sscanf(v, "%d:%d", &n, &seed)
	}
	r := rand.New(rand.NewSource(seed))
	for i := 0; i < n; i++ {
		si := r.Intn(len(seeds))
		b := bytes.Clone(seeds[si])
		var opt gpt.FixOptions
		if i%2 == 1 {
			opt.Ref = refs[si] // the undamaged table as the reference
		}
		for k := 0; k < 1+r.Intn(4); k++ {
			var off int
			switch r.Intn(4) {
			case 0:
				off = 512 + r.Intn(92) // primary header
			case 1:
				off = 1024 + r.Intn(8*128) // first entries
			case 2:
				off = len(b) - 512 + r.Intn(92) // backup header at the end
			default:
				off = r.Intn(len(b))
			}
			if r.Intn(3) == 0 && off+8 <= len(b) {
				binary.LittleEndian.PutUint64(b[off:], uint64(r.Intn(300)))
			} else {
				b[off] = byte(r.Intn(256))
			}
		}
		if r.Intn(2) == 0 {
			pfFixCRCs(b)
		}
		if !t.Run(fmt.Sprint(i), func(t *testing.T) { pfPlanFixProperty(t, b, opt) }) {
			return
		}
	}
}

// pfFixCRCs makes the CRCs of the headers at LBA 1 and 255 valid again.
func pfFixCRCs(b []byte) {
	for _, lba := range []uint64{1, 255} {
		h := b[lba*512 : lba*512+512]
		if string(h[:8]) != "EFI PART" {
			continue
		}
		entry := binary.LittleEndian.Uint64(h[0x48:])
		n := uint64(binary.LittleEndian.Uint32(h[0x50:])) * uint64(binary.LittleEndian.Uint32(h[0x54:]))
		if entry < 1<<20 && n <= 1<<20 && entry*512+n <= uint64(len(b)) {
			binary.LittleEndian.PutUint32(h[0x58:], crc32.ChecksumIEEE(b[entry*512:entry*512+n]))
		}
		if size := binary.LittleEndian.Uint32(h[0x0C:]); size >= 92 && size <= 512 {
			binary.LittleEndian.PutUint32(h[0x10:], 0)
			binary.LittleEndian.PutUint32(h[0x10:], crc32.ChecksumIEEE(h[:size]))
		}
	}
}

// pfUndoPath returns a fresh undo file path in the input's own
// t.TempDir(), which the testing package removes (never a shared place
// such as /tmp or /dev/shm where undo files would pile up).
func pfUndoPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "undo.json")
}
