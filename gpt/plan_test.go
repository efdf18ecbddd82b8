package gpt_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/esxitest"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// pfBase caches one pristine image per (version, size, sector size):
// sgdisk sleeps a second after every write. Different images are made
// concurrently.
var pfBase = struct {
	sync.Mutex
	dir string
	m   map[string]*pfBaseImage
}{m: map[string]*pfBaseImage{}}

type pfBaseImage struct {
	once sync.Once
	path string
}

// pfPristine returns a fresh copy (in dir) of the ESXi image for v.
func pfPristine(t *testing.T, dir string, v esxi.Version, size int64, ss int) (string, []esxi.Part) {
	t.Helper()
	key := fmt.Sprint(v, size, ss)
	pfBase.Lock()
	if pfBase.dir == "" {
		d, err := os.MkdirTemp("", "gpt-plan-base")
		if err != nil {
			pfBase.Unlock()
			t.Fatal(err)
		}
		pfBase.dir = d
	}
	b, ok := pfBase.m[key]
	if !ok {
		b = &pfBaseImage{}
		pfBase.m[key] = b
	}
	base := pfBase.dir
	pfBase.Unlock()
	b.once.Do(func() {
		b.path, _ = pfImage(t, base, strings.NewReplacer(" ", "-").Replace(key)+".img", v, size, ss)
	})
	if b.path == "" {
		t.Fatal("fixture image could not be made")
	}
	parts := esxitest.Layout(t, v, size, ss)
	dst := filepath.Join(dir, "orig.img")
	gpttest.Run(t, "cp", "--sparse=always", b.path, dst)
	return dst, parts
}

// pfCompacted returns a copy of the pristine ESXi image for v (orig, in
// dir) and that image raw-copied onto a disk of newSize bytes with both
// entry arrays compacted (work): the incident.
func pfCompacted(t *testing.T, dir string, v esxi.Version, size, newSize int64) (orig, work string) {
	t.Helper()
	orig, _ = pfPristine(t, dir, v, size, 512)
	work = filepath.Join(dir, "work.img")
	gpttest.Grow(t, orig, work, newSize)
	gpttest.EditArrays(t, work, 512, gpttest.Compact128)
	return orig, work
}

// pfFix reads path, plans with opt (or with esxi.Recognize when useESXi),
// applies, and returns the plan.
func pfFix(t *testing.T, path string, ss int, opt gpt.FixOptions, useESXi bool) *gpt.Plan {
	t.Helper()
	tb, err := gpt.ReadFile(path, ss)
	if err != nil {
		t.Fatal(err)
	}
	if useESXi {
		m, err := esxi.Recognize(tb)
		if err != nil {
			t.Fatalf("Recognize: %v", err)
		}
		opt.SlotMap, opt.SlotMapReason = m.SlotMap, "ESXi "+m.Family+" layout"
	}
	p, err := gpt.PlanFix(tb, opt)
	if err != nil {
		t.Fatalf("PlanFix: %v", err)
	}
	dev, err := gpt.OpenDevice(path, ss, true)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := p.Apply(dev, filepath.Join(t.TempDir(), "undo.json")); err != nil {
		t.Fatalf("Apply: %v\nplan:\n%s", err, p)
	}
	return p
}

// pfCheckFixed checks with the test's own decoder that path holds want
// (an entry array) in both copies, the backup at the last LBA, and that
// every CRC and position field is right.
func pfCheckFixed(t *testing.T, path string, ss int, want []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	last := uint64(fi.Size()/int64(ss)) - 1
	S := uint64(len(want)+ss-1) / uint64(ss)
	p := gpttest.Decode(t, path, ss, 1)
	b := gpttest.Decode(t, path, ss, last)
	if !p.HdrOK || !p.ArrOK || !b.HdrOK || !b.ArrOK {
		t.Fatalf("CRCs: primary header %v array %v, backup header %v array %v", p.HdrOK, p.ArrOK, b.HdrOK, b.ArrOK)
	}
	if !bytes.Equal(p.Arr, want) || !bytes.Equal(b.Arr, want) {
		t.Errorf("entry arrays differ from the original (primary equal: %v, backup equal: %v)", bytes.Equal(p.Arr, want), bytes.Equal(b.Arr, want))
	}
	if p.My != 1 || p.Alt != last || b.My != last || b.Alt != 1 || b.Entry != last-S || p.LastUsable != last-S-1 || b.LastUsable != p.LastUsable {
		t.Errorf("header fields: primary my %d alt %d lastUsable %d; backup my %d alt %d entry %d; disk last LBA %d",
			p.My, p.Alt, p.LastUsable, b.My, b.Alt, b.Entry, last)
	}
	mbr := gpttest.ReadAt(t, path, 0, 512)
	if got := binary.LittleEndian.Uint32(mbr[446+12:]); uint64(got) != min(last, 0xFFFFFFFF) {
		t.Errorf("protective MBR size %d, want %d", got, last)
	}
}

// TestFixIncident is the incident: an ESXi 5.0 disk of 8 GiB raw-copied
// onto 12 GiB, its entry array compacted with valid CRCs. Both repairs
// (with the original as reference, and by recognising the ESXi layout)
// must give back the original array byte for byte.
func TestFixIncident(t *testing.T) {
	dir := t.TempDir()
	orig, parts := pfPristine(t, dir, "5.0", 8*pfGiB, 512)
	markers := gpttest.Markers(t, orig, pfExtents(parts)...)
	origArr := gpttest.Decode(t, orig, 512, 1).Arr
	broken := filepath.Join(dir, "broken.img")
	gpttest.Grow(t, orig, broken, 12*pfGiB)
	gpttest.EditArrays(t, broken, 512, gpttest.Compact128)
	if bytes.Equal(gpttest.Decode(t, broken, 512, 1).Arr, origArr) {
		t.Fatal("fixture: compaction changed nothing")
	}
	ref, err := gpt.ReadFile(orig, 512)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"ref", "esxi"} {
		t.Run(mode, func(t *testing.T) {
			work := filepath.Join(t.TempDir(), "work.img")
			gpttest.Run(t, "cp", "--sparse=always", broken, work)
			opt := gpt.FixOptions{}
			if mode == "ref" {
				opt.Ref = ref
			}
			p := pfFix(t, work, 512, opt, mode == "esxi")
			s := p.String()
			for _, want := range []string{
				"move entries 5,6,7,8 from slots 4,5,6,7 back to slots 5,6,7,8",
				"zero slot 4",
				fmt.Sprintf("backup GPT at the disk's last LBA %d (was %d", 12*pfGiB/512-1, 8*pfGiB/512-1),
				"CRC32",
			} {
				if !strings.Contains(s, want) {
					t.Errorf("plan does not say %q:\n%s", want, s)
				}
			}
			pfCheckFixed(t, work, 512, origArr)
			gpttest.SgdiskVerify(t, work)
			pfCheckSlots(t, work, parts)
			pfCheckSfdisk(t, work, parts)
			gpttest.CheckMarkers(t, work, markers)
			// The whole table is now clean for our reader too, and a
			// second run has nothing to do.
			tb, err := gpt.ReadFile(work, 512)
			if err != nil {
				t.Fatal(err)
			}
			if len(tb.Problems) > 0 {
				t.Errorf("problems after the fix: %v", tb.Problems)
			}
			p2, err := gpt.PlanFix(tb, opt)
			if err != nil || !p2.Empty() {
				t.Errorf("second plan: %v\n%v", err, p2)
			}
		})
	}
}

// TestFixLayouts runs every repair on every ESXi layout and sector size.
func TestFixLayouts(t *testing.T) {
	type layout struct {
		v    esxi.Version
		size int64
		ss   int
	}
	layouts := []layout{
		{"5.0", 8 * pfGiB, 512}, {"5.5", 6 * pfGiB, 512}, {"6.0", 10 * pfGiB, 512}, {"6.7", 10 * pfGiB, 512},
		{"7.0", 16 * pfGiB, 512}, {"7.0", 200 * pfGiB, 512}, {"6.7", 10 * pfGiB, 4096}, {"7.0", 40 * pfGiB, 4096},
	}
	type scenario struct {
		name    string
		grow    int64                                   // bytes added to the disk
		damage  func(t *testing.T, path string, ss int) // after growing
		useESXi bool
	}
	scenarios := []scenario{
		{name: "compacted-grown", grow: 4 * pfGiB, useESXi: true, damage: func(t *testing.T, p string, ss int) { gpttest.EditArrays(t, p, ss, gpttest.Compact128) }},
		{name: "sorted-grown", grow: 2 * pfGiB, useESXi: true, damage: func(t *testing.T, p string, ss int) { gpttest.EditArrays(t, p, ss, gpttest.Sort) }},
		{name: "compacted-same-size", useESXi: true, damage: func(t *testing.T, p string, ss int) { gpttest.EditArrays(t, p, ss, gpttest.Compact128) }},
		{name: "stale-backup", grow: 1 * pfGiB},
		{name: "primary-header-damaged", damage: func(t *testing.T, p string, ss int) { pfFlip(t, p, int64(ss)+0x30) }},
		{name: "primary-array-damaged", grow: 3 * pfGiB, damage: func(t *testing.T, p string, ss int) { pfFlip(t, p, 2*int64(ss)+40) }},
		{name: "backup-damaged", damage: func(t *testing.T, p string, ss int) {
			fi, _ := os.Stat(p)
			pfFlip(t, p, fi.Size()-int64(ss)+0x58)
		}},
		{name: "backup-missing-grown", grow: 1 * pfGiB, damage: func(t *testing.T, p string, ss int) {
			pfZero(t, p, int64(gpttest.Decode(t, p, ss, 1).Alt)*int64(ss), ss)
		}},
	}
	for _, l := range layouts {
		t.Run(fmt.Sprintf("%s-%dG-%d", l.v, l.size/pfGiB, l.ss), func(t *testing.T) {
			t.Parallel()
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					dir := t.TempDir()
					orig, parts := pfPristine(t, dir, l.v, l.size, l.ss)
					markers := gpttest.Markers(t, orig, pfExtents(parts)...)
					o := gpttest.Decode(t, orig, l.ss, 1)
					work := filepath.Join(dir, "work.img")
					gpttest.Grow(t, orig, work, l.size+sc.grow)
					if sc.damage != nil {
						sc.damage(t, work, l.ss)
					}
					p := pfFix(t, work, l.ss, gpt.FixOptions{}, sc.useESXi)
					if p.Empty() {
						t.Fatal("empty plan for a damaged table")
					}
					pfCheckFixed(t, work, l.ss, o.Arr)
					if sc.grow == 0 {
						// Same disk: both copies must be exactly the original's.
						fi, _ := os.Stat(work)
						last := uint64(fi.Size()/int64(l.ss)) - 1
						if !bytes.Equal(gpttest.Decode(t, work, l.ss, 1).Hdr, o.Hdr) || !bytes.Equal(gpttest.Decode(t, work, l.ss, last).Hdr, gpttest.Decode(t, orig, l.ss, last).Hdr) {
							t.Error("headers differ from the original")
						}
					}
					if l.ss == 512 {
						gpttest.SgdiskVerify(t, work)
						pfCheckSlots(t, work, parts)
					}
					gpttest.CheckMarkers(t, work, markers)
				})
			}
		})
	}
}

func pfFlip(t testing.TB, path string, off int64) {
	t.Helper()
	b := gpttest.ReadAt(t, path, off, 1)
	b[0] ^= 0x5A
	gpttest.Patch(t, path, b, off)
}

func pfZero(t testing.TB, path string, off int64, n int) {
	t.Helper()
	gpttest.Patch(t, path, make([]byte, n), off)
}

// TestFixShrunk: a table for a bigger disk is refused when a partition no
// longer fits, and repaired when all of them still do.
func TestFixShrunk(t *testing.T) {
	dir := t.TempDir()
	// ESXi 5.0 on 8 GiB: the datastore runs to the end; 7 GiB cuts it.
	orig, _ := pfPristine(t, dir, "5.0", 8*pfGiB, 512)
	small := filepath.Join(dir, "small.img")
	gpttest.Grow(t, orig, small, 7*pfGiB)
	tb, err := gpt.ReadFile(small, 512)
	if err != nil {
		t.Fatal(err)
	}
	before := gpttest.ReadAt(t, small, 0, 34*512)
	if _, err := gpt.PlanFix(tb, gpt.FixOptions{}); err == nil || !strings.Contains(err.Error(), "smaller than the table needs") {
		t.Errorf("shrunk disk cutting partition 3: err = %v", err)
	}
	if !bytes.Equal(before, gpttest.ReadAt(t, small, 0, 34*512)) {
		t.Error("a refused plan changed the disk")
	}

	// ESXi 5.0 on 3 GiB has no scratch or datastore: 2 GiB still holds it all.
	dir2 := t.TempDir()
	orig2, parts := pfPristine(t, dir2, "5.0", 3*pfGiB, 512)
	o := gpttest.Decode(t, orig2, 512, 1)
	small2 := filepath.Join(dir2, "small.img")
	gpttest.Grow(t, orig2, small2, 2*pfGiB)
	pfFix(t, small2, 512, gpt.FixOptions{}, false)
	pfCheckFixed(t, small2, 512, o.Arr)
	gpttest.SgdiskVerify(t, small2)
	pfCheckSlots(t, small2, parts)
}

// TestFixGrow grows the datastore (entry 3) to the end of the bigger disk.
func TestFixGrow(t *testing.T) {
	dir := t.TempDir()
	_, work := pfCompacted(t, dir, "5.0", 8*pfGiB, 12*pfGiB)
	tb, _ := gpt.ReadFile(work, 512)
	// Partition 3 is in slot 2 of the compacted table; GrowSlot names the
	// final slot, after the move.
	m, err := esxi.Recognize(tb)
	if err != nil {
		t.Fatal(err)
	}
	p, err := gpt.PlanFix(tb, gpt.FixOptions{SlotMap: m.SlotMap, GrowSlot: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.String(), "grow partition 3") {
		t.Errorf("plan:\n%s", p)
	}
	dev, err := gpt.OpenDevice(work, 512, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(dev, filepath.Join(dir, "undo")); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	gpttest.SgdiskVerify(t, work)
	lastUsable := uint64(12*pfGiB/512) - 34
	out := gpttest.Run(t, "sgdisk", "-i", "3", work)
	if !strings.Contains(out, fmt.Sprintf("Last sector: %d", lastUsable)) {
		t.Errorf("sgdisk -i 3:\n%s\nwant last sector %d", out, lastUsable)
	}
	// Growing a partition that is not the last one is refused.
	if _, err := gpt.PlanFix(tb, gpt.FixOptions{SlotMap: m.SlotMap, GrowSlot: 5}); err == nil {
		t.Error("growing partition 5 (not the last) was accepted")
	}
}

// pfFaulty fails every write after the first n, as a power cut would.
type pfFaulty struct {
	f       *os.File
	left    int
	written int
}

var errPowerCut = errors.New("injected power cut")

func (d *pfFaulty) ReadAt(b []byte, off int64) (int, error) { return d.f.ReadAt(b, off) }
func (d *pfFaulty) Sync() error                             { return d.f.Sync() }
func (d *pfFaulty) WriteAt(b []byte, off int64) (int, error) {
	if d.left == 0 {
		return 0, errPowerCut
	}
	d.left--
	d.written++
	return d.f.WriteAt(b, off)
}

// pfSgdiskUsable checks that sgdisk can load the table from at least one
// good copy and sees all parts. Images with 4096-byte sectors are looked
// at through a read-only loop device with that sector size (root only).
func pfSgdiskUsable(t *testing.T, path string, ss, nparts int) {
	t.Helper()
	if ss != 512 {
		loop := pfLoop(t, path, ss)
		if loop == "" {
			return
		}
		path = loop
	}
	outB, _ := exec.Command("sgdisk", "-v", path).CombinedOutput() // whatever its exit status
	out := string(outB)
	if strings.Contains(out, "Creating new GPT entries") {
		t.Fatalf("sgdisk found no usable GPT copy:\n%s", out)
	}
	mainOK := !strings.Contains(out, "Main header: ERROR") && !strings.Contains(out, "Main partition table: ERROR")
	backupOK := !strings.Contains(out, "Backup header: ERROR") && !strings.Contains(out, "Backup partition table: ERROR")
	if !mainOK && !backupOK {
		t.Fatalf("sgdisk: neither copy is good (%s):\n%s", path, out)
	}
	if got := len(gpttest.SgdiskSlots(t, path)); got != nparts {
		t.Fatalf("sgdisk -p lists %d partitions, want %d", got, nparts)
	}
}

// pfLoop attaches path read-only as a loop device with sector size ss and
// returns it ("" and a log line when that is not possible here).
func pfLoop(t *testing.T, path string, ss int) string {
	t.Helper()
	dev, why := attachLoop(t, path, ss)
	if dev == "" {
		t.Logf("%s: sgdisk check of the %d-byte-sector image skipped", why, ss)
	}
	return dev
}

// TestCrashSafety interrupts repairs after every sector write and shows
// that the disk stays usable from one good copy (sgdisk -v), that running
// the repair again completes it, and that the undo file restores the
// damaged-but-consistent state it started from.
func TestCrashSafety(t *testing.T) {
	cases := []struct {
		name       string
		v          esxi.Version
		size, grow int64
		ss         int
	}{
		{"incident-5.0-grown", "5.0", 8 * pfGiB, 4 * pfGiB, 512},
		{"6.7-same-size", "6.7", 10 * pfGiB, 0, 512},
		{"7.0-4k-grown", "7.0", 16 * pfGiB, 2 * pfGiB, 4096},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			orig, parts := pfPristine(t, dir, c.v, c.size, c.ss)
			origArr := gpttest.Decode(t, orig, c.ss, 1).Arr
			broken := filepath.Join(dir, "broken.img")
			newSize := c.size + c.grow
			gpttest.Grow(t, orig, broken, newSize)
			gpttest.EditArrays(t, broken, c.ss, gpttest.Compact128)
			ss := int64(c.ss)
			regions := func(path string) []byte { // every sector the repair may touch
				var b []byte
				b = append(b, gpttest.ReadAt(t, path, 0, int(6*ss+16384))...)
				b = append(b, gpttest.ReadAt(t, path, c.size-ss-16384, int(ss+16384))...)
				return append(b, gpttest.ReadAt(t, path, newSize-ss-16384, int(ss+16384))...)
			}
			brokenRegions := regions(broken)

			tb, _ := gpt.ReadFile(broken, c.ss)
			m, err := esxi.Recognize(tb)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := gpt.PlanFix(tb, gpt.FixOptions{SlotMap: m.SlotMap})
			if err != nil {
				t.Fatal(err)
			}
			// How many sector writes does the full repair make?
			dry := filepath.Join(dir, "dry.img")
			gpttest.Run(t, "cp", "--sparse=always", broken, dry)
			f, err := os.OpenFile(dry, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			counter := &pfFaulty{f: f, left: 1 << 30}
			if err := plan.ApplyTo(counter, dry, newSize, c.ss, filepath.Join(dir, "dry-undo")); err != nil {
				t.Fatal(err)
			}
			f.Close()
			total := counter.written
			if total < 4 {
				t.Fatalf("the repair writes only %d sectors", total)
			}
			t.Logf("the repair writes %d sectors (plan lists %d candidates)", total, len(plan.Writes))
			for k := 0; k <= total; k++ {
				work := filepath.Join(t.TempDir(), "work.img")
				gpttest.Run(t, "cp", "--sparse=always", broken, work)
				f, err := os.OpenFile(work, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				undo := filepath.Join(t.TempDir(), "undo.json")
				err = plan.ApplyTo(&pfFaulty{f: f, left: k}, work, newSize, c.ss, undo)
				f.Close()
				switch {
				case k < total && !errors.Is(err, errPowerCut):
					t.Fatalf("cut after %d writes: err = %v, want the injected fault", k, err)
				case k >= total && err != nil:
					t.Fatalf("full run: %v", err)
				}
				pfSgdiskUsable(t, work, c.ss, len(parts))

				// Undo from this state restores the starting point exactly.
				undone := filepath.Join(t.TempDir(), "undone.img")
				gpttest.Run(t, "cp", "--sparse=always", work, undone)
				dev, err := gpt.OpenDevice(undone, c.ss, true)
				if err != nil {
					t.Fatal(err)
				}
				if err := gpt.ApplyUndo(dev, undo); err != nil {
					t.Fatalf("cut after %d writes: ApplyUndo: %v", k, err)
				}
				dev.Close()
				if !bytes.Equal(regions(undone), brokenRegions) {
					t.Errorf("cut after %d writes: after ApplyUndo the GPT regions differ from the starting point", k)
				}

				// Running the repair again completes it.
				pfFix(t, work, c.ss, gpt.FixOptions{}, true)
				pfCheckFixed(t, work, c.ss, origArr)
				if c.ss == 512 {
					gpttest.SgdiskVerify(t, work)
				}
			}
		})
	}
}

// TestApplyRefusesChangedDisk: a plan made before someone else wrote to
// the table is not applied, and nothing is written.
func TestApplyRefusesChangedDisk(t *testing.T) {
	dir := t.TempDir()
	_, work := pfCompacted(t, dir, "5.0", 8*pfGiB, 9*pfGiB)
	tb, _ := gpt.ReadFile(work, 512)
	m, _ := esxi.Recognize(tb)
	p, err := gpt.PlanFix(tb, gpt.FixOptions{SlotMap: m.SlotMap})
	if err != nil {
		t.Fatal(err)
	}
	gpttest.EditArrays(t, work, 512, gpttest.Sort) // someone else changes the table
	before := gpttest.ReadAt(t, work, 0, 34*512)
	dev, _ := gpt.OpenDevice(work, 512, true)
	defer dev.Close()
	undo := filepath.Join(dir, "undo.json")
	if err := p.Apply(dev, undo); !errors.Is(err, gpt.ErrDiskChanged) {
		t.Errorf("Apply on a changed disk: %v", err)
	}
	if !bytes.Equal(before, gpttest.ReadAt(t, work, 0, 34*512)) {
		t.Error("the refused plan wrote to the disk")
	}
	if _, err := os.Stat(undo); err == nil {
		t.Error("an undo file was written for a refused plan")
	}
}

// TestUndoFile: the undo file refuses to be replayed when damaged or on
// another disk, and an existing undo file is never overwritten.
func TestUndoFile(t *testing.T) {
	dir := t.TempDir()
	orig, _ := pfPristine(t, dir, "6.7", 10*pfGiB, 512)
	work := filepath.Join(dir, "work.img")
	gpttest.Grow(t, orig, work, 11*pfGiB)
	brokenHead := gpttest.ReadAt(t, work, 0, 34*512)
	tb, _ := gpt.ReadFile(work, 512)
	p, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	undo := filepath.Join(dir, "undo.json")
	if err := os.WriteFile(undo, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, _ := gpt.OpenDevice(work, 512, true)
	if err := p.Apply(dev, undo); err == nil {
		t.Fatal("Apply overwrote an existing undo file")
	}
	os.Remove(undo)
	if err := p.Apply(dev, undo); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	u, err := gpt.LoadUndo(undo)
	if err != nil {
		t.Fatal(err)
	}
	if u.DiskSize != 11*pfGiB || u.SectorSize != 512 || len(u.Records) == 0 {
		t.Errorf("undo file: %+v", u)
	}

	// Damaged: one hex digit changed.
	data, _ := os.ReadFile(undo)
	i := bytes.Index(data, []byte(`"old": "`)) + len(`"old": "`) + 10
	bad := bytes.Clone(data)
	bad[i] ^= 1
	badPath := filepath.Join(dir, "bad.json")
	os.WriteFile(badPath, bad, 0o600)
	dev, _ = gpt.OpenDevice(work, 512, true)
	if err := gpt.ApplyUndo(dev, badPath); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged undo file: %v", err)
	}
	dev.Close()

	// Another disk size.
	other := filepath.Join(dir, "other.img")
	gpttest.Grow(t, work, other, 12*pfGiB)
	dev, _ = gpt.OpenDevice(other, 512, true)
	if err := gpt.ApplyUndo(dev, undo); err == nil || !strings.Contains(err.Error(), "undo file is for a disk") {
		t.Errorf("undo on another disk: %v", err)
	}
	dev.Close()

	// The right one restores the start.
	dev, _ = gpt.OpenDevice(work, 512, true)
	if err := gpt.ApplyUndo(dev, undo); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if !bytes.Equal(brokenHead, gpttest.ReadAt(t, work, 0, 34*512)) {
		t.Error("undo did not restore the start of the disk")
	}
}

// TestPlanEmpty: a clean table gives an empty plan that writes nothing.
func TestPlanEmpty(t *testing.T) {
	dir := t.TempDir()
	orig, _ := pfPristine(t, dir, "7.0", 16*pfGiB, 512)
	tb, err := gpt.ReadFile(orig, 512)
	if err != nil {
		t.Fatal(err)
	}
	p, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Empty() || !strings.Contains(p.String(), "Nothing to do") {
		t.Errorf("plan for a clean table:\n%s", p)
	}
	m, err := esxi.Recognize(tb)
	if err != nil {
		t.Fatal(err)
	}
	p, err = gpt.PlanFix(tb, gpt.FixOptions{SlotMap: m.SlotMap})
	if err != nil || !p.Empty() {
		t.Errorf("identity slot map: %v\n%v", err, p)
	}
}

// TestFixRefDetails: with a reference, junk in unused slots and bytes
// after a name's NUL come back exactly; partitions whose GUIDs were
// regenerated are matched by type and position and keep the disk's GUID;
// a table with both copies damaged is rebuilt from the reference.
func TestFixRefDetails(t *testing.T) {
	dir := t.TempDir()
	orig, parts := pfPristine(t, dir, "5.0", 8*pfGiB, 512)
	gpttest.EditArrays(t, orig, 512, func(arr []byte) {
		for i := 99*128 + 16; i < 100*128; i++ { // junk in unused slot 100 (type GUID stays zero)
			arr[i] = byte(i*7 + 3)
		}
		e := arr[4*128 : 5*128] // entry 5: "bootbank", NUL, then junk
		for i, c := range "bootbank" {
			e[56+2*i] = byte(c)
		}
		copy(e[56+18:], "JUNK-AFTER-NUL")
	})
	origArr := gpttest.Decode(t, orig, 512, 1).Arr
	ref, err := gpt.ReadFile(orig, 512)
	if err != nil {
		t.Fatal(err)
	}
	windows := func(arr []byte) { // a list-based editor's rewrite
		gpttest.Compact(arr, 128)
		for i := 0; i < 128; i++ {
			e := arr[i*128 : (i+1)*128]
			for j := 56; j+1 < 128; j += 2 {
				if e[j] == 0 && e[j+1] == 0 {
					clear(e[j:])
					break
				}
			}
		}
	}

	t.Run("junk-and-names", func(t *testing.T) {
		work := filepath.Join(t.TempDir(), "work.img")
		gpttest.Grow(t, orig, work, 10*pfGiB)
		gpttest.EditArrays(t, work, 512, windows)
		p := pfFix(t, work, 512, gpt.FixOptions{Ref: ref}, false)
		for _, want := range []string{"restore the bytes of unused slot 100", "restore entry 5 byte for byte"} {
			if !strings.Contains(p.String(), want) {
				t.Errorf("plan lacks %q:\n%s", want, p)
			}
		}
		pfCheckFixed(t, work, 512, origArr)
		gpttest.SgdiskVerify(t, work)
	})

	t.Run("regenerated-guids", func(t *testing.T) {
		work := filepath.Join(t.TempDir(), "work.img")
		gpttest.Grow(t, orig, work, 10*pfGiB)
		gpttest.EditArrays(t, work, 512, func(arr []byte) {
			gpttest.Compact(arr, 128)
			for i := 0; i < len(parts); i++ {
				for j := 16; j < 32; j++ {
					arr[i*128+j] ^= 0xA5
				}
			}
		})
		before := gpttest.Decode(t, work, 512, 1).Arr
		p := pfFix(t, work, 512, gpt.FixOptions{Ref: ref}, false)
		if !strings.Contains(strings.Join(p.Notes, "\n"), "by type and position") {
			t.Errorf("plan notes do not mention the fallback match:\n%s", p)
		}
		after := gpttest.Decode(t, work, 512, 1).Arr
		for slot := 1; slot <= 128; slot++ {
			a, o := after[(slot-1)*128:slot*128], origArr[(slot-1)*128:slot*128]
			if !bytes.Equal(a[0:16], o[0:16]) || !bytes.Equal(a[32:48], o[32:48]) {
				t.Errorf("slot %d: type or range differs from the reference", slot)
			}
			if !bytes.Equal(a[:16], make([]byte, 16)) && bytes.Equal(a[16:32], o[16:32]) {
				t.Errorf("slot %d: the reference's GUID was copied over the disk's", slot)
			}
		}
		if bytes.Equal(before, after) {
			t.Error("nothing moved")
		}
		gpttest.SgdiskVerify(t, work)
	})

	t.Run("both-copies-damaged", func(t *testing.T) {
		work := filepath.Join(t.TempDir(), "work.img")
		gpttest.Grow(t, orig, work, 8*pfGiB)
		pfFlip(t, work, 512+0x58)         // primary array CRC field
		pfFlip(t, work, 8*pfGiB-512+0x58) // backup array CRC field
		tb, err := gpt.ReadFile(work, 512)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gpt.PlanFix(tb, gpt.FixOptions{}); err == nil || !strings.Contains(err.Error(), "reference") {
			t.Errorf("no usable copy and no reference: %v", err)
		}
		p := pfFix(t, work, 512, gpt.FixOptions{Ref: ref}, false)
		if !strings.Contains(p.String(), "from the reference") {
			t.Errorf("plan:\n%s", p)
		}
		pfCheckFixed(t, work, 512, origArr)
		gpttest.SgdiskVerify(t, work)
	})
}

// TestFixNoRelocate keeps a stranded backup where it is.
func TestFixNoRelocate(t *testing.T) {
	dir := t.TempDir()
	orig, work := pfCompacted(t, dir, "6.7", 10*pfGiB, 12*pfGiB)
	tb, _ := gpt.ReadFile(work, 512)
	m, err := esxi.Recognize(tb)
	if err != nil {
		t.Fatal(err)
	}
	p := pfFix(t, work, 512, gpt.FixOptions{SlotMap: m.SlotMap, NoRelocate: true}, false)
	oldLast := uint64(10*pfGiB/512) - 1
	if p.BackupLBA() != oldLast {
		t.Errorf("backup planned at %d, want it kept at %d", p.BackupLBA(), oldLast)
	}
	b := gpttest.Decode(t, work, 512, oldLast)
	if !b.HdrOK || !b.ArrOK || !bytes.Equal(b.Arr, gpttest.Decode(t, orig, 512, 1).Arr) {
		t.Error("the kept backup is not the repaired table")
	}
	if end := gpttest.ReadAt(t, work, 12*pfGiB-512, 512); !bytes.Equal(end, make([]byte, 512)) {
		t.Error("something was written at the end of the disk")
	}
}

// TestFixHeaderFields: a valid backup header with a wrong field (CRC
// recomputed, so only a field check finds it) is corrected from the
// primary, and the plan names the field.
func TestFixHeaderFields(t *testing.T) {
	dir := t.TempDir()
	orig, _ := pfPristine(t, dir, "6.7", 10*pfGiB, 512)
	o := gpttest.Decode(t, orig, 512, 1)
	last := uint64(10*pfGiB/512) - 1
	b := gpttest.Decode(t, orig, 512, last)
	work := filepath.Join(dir, "work.img")
	gpttest.Run(t, "cp", "--sparse=always", orig, work)
	h := bytes.Clone(b.Hdr)
	binary.LittleEndian.PutUint64(h[0x28:], 40) // FirstUsableLBA 34 -> 40
	binary.LittleEndian.PutUint32(h[0x10:], 0)
	binary.LittleEndian.PutUint32(h[0x10:], crc32.ChecksumIEEE(h[:92]))
	f, _ := os.OpenFile(work, os.O_RDWR, 0)
	gpttest.WriteAt(t, f, h, int64(last)*512)
	f.Close()
	p := pfFix(t, work, 512, gpt.FixOptions{}, false)
	if !strings.Contains(p.String(), "correct the backup header: FirstUsableLBA 40 -> 34") {
		t.Errorf("plan:\n%s", p)
	}
	if !bytes.Equal(gpttest.Decode(t, work, 512, last).Hdr, b.Hdr) || !bytes.Equal(gpttest.Decode(t, work, 512, 1).Hdr, o.Hdr) {
		t.Error("headers are not the original's after the fix")
	}
}

// TestPlanReadOld: after ReadOld every write has its old bytes, writes of
// sectors already holding the new bytes are gone, and the plan still
// applies; a sector changed after ReadOld makes Apply refuse.
func TestPlanReadOld(t *testing.T) {
	dir := t.TempDir()
	orig, _ := pfPristine(t, dir, "5.0", 8*pfGiB, 512)
	work := filepath.Join(dir, "work.img")
	gpttest.Grow(t, orig, work, 9*pfGiB)
	tb, _ := gpt.ReadFile(work, 512)
	p, err := gpt.PlanFix(tb, gpt.FixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := len(p.Writes)
	dev, err := gpt.OpenDevice(work, 512, true)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := p.ReadOld(dev); err != nil {
		t.Fatal(err)
	}
	for _, w := range p.Writes {
		if w.Old == nil || bytes.Equal(w.Old, w.New) {
			t.Errorf("%s LBA %d: old bytes %v", w.Region, w.LBA, w.Old == nil)
		}
	}
	if len(p.Writes) >= before || strings.Contains(p.String(), "at most") {
		t.Errorf("%d writes before ReadOld, %d after:\n%s", before, len(p.Writes), p)
	}
	// Someone writes into the backup array's new place: refused.
	w := p.Writes[0]
	junk := bytes.Repeat([]byte{0xEE}, 512)
	if _, err := dev.WriteAt(junk, w.Offset); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(dev, filepath.Join(dir, "u1")); !errors.Is(err, gpt.ErrDiskChanged) {
		t.Errorf("Apply after a change: %v", err)
	}
	if _, err := dev.WriteAt(w.Old, w.Offset); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(dev, filepath.Join(dir, "u2")); err != nil {
		t.Fatal(err)
	}
	gpttest.SgdiskVerify(t, work)
}
