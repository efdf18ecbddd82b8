package esxi

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestDamage damages a 5.0 image in every mode and checks the result with
// sgdisk (an independent GPT reader), fsck.fat and mtools, and that no
// partition data moved except where the mode says.
func TestDamage(t *testing.T) {
	needTool(t, "sgdisk", "gdisk")
	opt := CreateOptions{Version: "5.0", Size: 8 << 30, Seed: 11}
	orig := createImage(t, opt)
	parts, _ := Layout(opt.Version, opt.Size, 512)
	sums, err := PartitionChecksums(orig, parts)
	if err != nil {
		t.Fatal(err)
	}
	canonical := map[int][2]uint64{}
	for _, p := range parts {
		canonical[p.Slot] = [2]uint64{p.First, p.Last}
	}
	renumbered := func(byLBA bool) map[int][2]uint64 {
		ps := BySlot(parts)
		if byLBA {
			sort.Slice(ps, func(i, j int) bool { return ps[i].First < ps[j].First })
		}
		m := map[int][2]uint64{}
		for i, p := range ps {
			m[i+1] = [2]uint64{p.First, p.Last}
		}
		return m
	}
	for _, c := range []struct {
		mode       string
		size       int64
		wantSize   int64
		verify     []string // all must appear in sgdisk -v output
		rows       map[int][2]uint64
		changedFAT bool // FAT partitions got Windows' files
	}{
		{"windows", 0, opt.Size + 1<<30, []string{"No problems found"}, renumbered(false), true},
		{"windows", 20 << 30, 20 << 30, []string{"No problems found"}, renumbered(false), true},
		{"stale-backup", 0, opt.Size + 1<<30, []string{"secondary header's self-pointer"}, canonical, false},
		{"sorted", 0, opt.Size, []string{"No problems found"}, renumbered(true), false},
		{"primary-crc", 0, opt.Size, []string{"Main header: ERROR", "Backup header: OK"}, canonical, false},
		{"backup-crc", 0, opt.Size, []string{"Main header: OK", "Backup header: ERROR"}, canonical, false},
		{"primary-zeroed", 0, opt.Size, []string{"invalid main GPT header"}, canonical, false},
		{"shrunk", 0, opt.Size - 1<<30, []string{"Disk size is smaller than the main header indicates"}, canonical, false},
	} {
		t.Run(fmt.Sprintf("%s-%d", c.mode, c.size>>30), func(t *testing.T) {
			dmg := filepath.Join(t.TempDir(), "damaged.img")
			if err := Damage(dmg, c.mode, DamageOptions{Source: orig, Size: c.size}); err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(dmg); st.Size() != c.wantSize {
				t.Errorf("size %d, want %d", st.Size(), c.wantSize)
			}
			out, _ := gpttest.SgdiskCheck(t, dmg)
			for _, w := range c.verify {
				if !strings.Contains(out, w) {
					t.Errorf("sgdisk -v lacks %q:\n%s", w, out)
				}
			}
			got := map[int][2]uint64{}
			for _, r := range gpttest.SgdiskList(t, dmg) {
				got[r.Num] = [2]uint64{r.First, r.Last}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.rows) {
				t.Errorf("sgdisk -p entries %v, want %v", got, c.rows)
			}
			// Data: every partition that fits is unchanged, except the FATs
			// Windows wrote to.
			var inside []Part
			for _, p := range parts {
				if int64(p.Last+1)*512 <= c.wantSize {
					inside = append(inside, p)
				}
			}
			after, err := PartitionChecksums(dmg, inside)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range inside {
				fat := p.Type == TypeBasicData && strings.HasPrefix(p.FS, "fat")
				if changed := after[p.Slot] != sums[p.Slot]; changed != (c.changedFAT && fat) {
					t.Errorf("partition %d (%s): changed=%v", p.Slot, p.Role, changed)
				}
			}
			if c.mode == "shrunk" && len(inside) != len(parts)-1 {
				t.Errorf("shrunk: %d of %d partitions fit, want all but the datastore", len(inside), len(parts))
			}
			if c.changedFAT {
				checkWindowsLitter(t, dmg, parts)
			}
		})
	}
}

// checkWindowsLitter: every Basic Data FAT has DESKTOP.INI and
// $RECYCLE.BIN/DESKTOP.INI, and fsck.fat still finds it clean.
func checkWindowsLitter(t *testing.T, img string, parts []Part) {
	fsck := needTool(t, "fsck.fat", "dosfstools")
	mdir := needTool(t, "mdir", "mtools")
	for _, p := range parts {
		if !strings.HasPrefix(p.FS, "fat") {
			continue
		}
		start := int64(p.First) * 512
		out, err := runErr(mdir, "-i", fmt.Sprintf("%s@@%d", img, start), "-/", "-b", "::")
		if err != nil {
			t.Errorf("mdir partition %d: %v", p.Slot, err)
		}
		has := strings.Contains(out, "::/DESKTOP.INI") && strings.Contains(out, "::/$RECYCLE.BIN/DESKTOP.INI")
		if has != (p.Type == TypeBasicData) {
			t.Errorf("partition %d (%s): Windows files present=%v:\n%s", p.Slot, p.Role, has, out)
		}
		part := extract(t, img, start, p.Size())
		if out, err := runErr(fsck, "-n", part); err != nil {
			t.Errorf("fsck.fat -n partition %d after windows: %v\n%s", p.Slot, err, out)
		}
	}
}

// TestDamage4Kn damages a 4Kn 6.7 image and reads it back with sgdisk
// through a 4096-byte loop device.
func TestDamage4Kn(t *testing.T) {
	opt := CreateOptions{Version: "6.7", Size: 16 << 30, SectorSize: 4096, Seed: 5}
	orig := createImage(t, opt)
	parts, _ := Layout(opt.Version, opt.Size, 4096)
	for _, mode := range []string{"windows", "sorted"} {
		t.Run(mode, func(t *testing.T) {
			dmg := filepath.Join(t.TempDir(), "d.img")
			if err := Damage(dmg, mode, DamageOptions{Source: orig}); err != nil {
				t.Fatal(err)
			}
			dev := loopDevice(t, dmg, 4096)
			needTool(t, "sgdisk", "gdisk")
			if out, clean := gpttest.SgdiskCheck(t, dev); !clean {
				t.Errorf("sgdisk -v:\n%s", out)
			}
			ps := BySlot(parts)
			if mode == "sorted" {
				ps = parts // Layout is in disk order
			}
			var want, got []string
			for i, p := range ps {
				f, l := p.LBAs(4096)
				want = append(want, fmt.Sprint(i+1, f, l))
			}
			for _, r := range gpttest.SgdiskList(t, dev) {
				got = append(got, fmt.Sprint(r.Num, r.First, r.Last))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("sgdisk -p: %v, want %v", got, want)
			}
			if mode == "windows" {
				checkWindowsLitter(t, dmg, parts)
			}
		})
	}
}

func TestDamageRefuses(t *testing.T) {
	opt := CreateOptions{Version: "5.0", Size: 2 << 30, Seed: 1}
	orig := createImage(t, opt)
	dir := t.TempDir()
	broken := filepath.Join(dir, "crc.img")
	if err := Damage(broken, "primary-crc", DamageOptions{Source: orig}); err != nil {
		t.Fatal(err)
	}
	before, _ := PartitionChecksums(orig, layoutOf(t, opt))
	for _, c := range []struct {
		name, path, mode string
		opt              DamageOptions
	}{
		{"unknown mode", filepath.Join(dir, "a"), "bogus", DamageOptions{Source: orig}},
		{"windows onto a smaller disk", filepath.Join(dir, "b"), "windows", DamageOptions{Source: orig, Size: 1 << 30}},
		{"shrunk onto a larger disk", filepath.Join(dir, "c"), "shrunk", DamageOptions{Source: orig, Size: 3 << 30}},
		{"already damaged", filepath.Join(dir, "d"), "sorted", DamageOptions{Source: broken}},
		{"destination exists", orig, "sorted", DamageOptions{Source: broken}},
		{"missing source", filepath.Join(dir, "e"), "sorted", DamageOptions{Source: filepath.Join(dir, "nope")}},
		{"not a GPT disk", filepath.Join(dir, "f"), "sorted", DamageOptions{Source: "/dev/null"}},
	} {
		if err := Damage(c.path, c.mode, c.opt); err == nil {
			t.Errorf("%s: Damage succeeded", c.name)
		}
	}
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			t.Errorf("failed Damage left %s behind", n)
		}
	}
	if after, _ := PartitionChecksums(orig, layoutOf(t, opt)); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused Damage changed the source")
	}
	// In place: sorted on the file itself.
	inplace := filepath.Join(dir, "inplace.img")
	if err := Damage(inplace, "windows", DamageOptions{Source: orig}); err != nil {
		t.Fatal(err)
	}
	if err := Damage(inplace, "primary-zeroed", DamageOptions{}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(inplace)
	defer f.Close()
	b := make([]byte, 33*512)
	f.ReadAt(b, 512)
	if !isZero(b) {
		t.Errorf("primary-zeroed in place left bytes in LBA 1-33")
	}
}

func layoutOf(t *testing.T, opt CreateOptions) []Part {
	t.Helper()
	ss := opt.SectorSize
	if ss == 0 {
		ss = 512
	}
	p, err := Layout(opt.Version, opt.Size, ss)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
