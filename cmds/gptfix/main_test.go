package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/internal/esxitest"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

const gib = int64(1) << 30

// The fixtures below are built with sgdisk and internal/gpttest's
// hand-written writer (raw offsets, hash/crc32) — not with the gpt
// package under test.

// esxiImage makes an 8 GiB-class ESXi image with sgdisk -a 1 -n ...
func esxiImage(t *testing.T, path string, v esxi.Version, size int64) []esxi.Part {
	t.Helper()
	parts := esxitest.Layout(t, v, size, 512)
	gpttest.Sparse(t, filepath.Dir(path), filepath.Base(path), size)
	gpttest.Sgdisk(t, path, esxitest.Parts(parts, 512, false))
	return parts
}

// compactTable closes the gaps in both entry arrays (primary at LBA 1,
// backup where it points) and makes the CRCs valid: the incident damage.
func compactTable(t *testing.T, path string, ss int) {
	t.Helper()
	gpttest.EditArrays(t, path, ss, gpttest.Compact128)
}

// markers writes random blocks into every partition and returns their hashes.
func markers(t *testing.T, path string, parts []esxi.Part) map[int64][32]byte {
	t.Helper()
	var r [][2]int64
	for _, p := range parts {
		r = append(r, [2]int64{int64(p.First) * 512, int64(p.Last+1) * 512})
	}
	return gpttest.Markers(t, path, r...)
}

// incident is the incident made in a test's directory: an ESXi image
// (orig.img) with markers in its partitions, raw-copied onto a bigger
// disk (broken.img) whose entry arrays are then compacted.
type incident struct {
	orig, broken string
	parts        []esxi.Part
	markers      map[int64][32]byte
	origArr      []byte // the original entry array
}

func newIncident(t *testing.T, dir string, v esxi.Version, size, newSize int64) incident {
	t.Helper()
	in := incident{orig: filepath.Join(dir, "orig.img"), broken: filepath.Join(dir, "broken.img")}
	in.parts = esxiImage(t, in.orig, v, size)
	in.markers = markers(t, in.orig, in.parts)
	in.origArr = gpttest.ReadAt(t, in.orig, 1024, 128*128)
	gpttest.Grow(t, in.orig, in.broken, newSize)
	compactTable(t, in.broken, 512)
	return in
}

func gptfix(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var o, e bytes.Buffer
	code := run(args, &o, &e)
	return code, o.String(), e.String()
}

func cp(t *testing.T, src, dst string) { gpttest.Run(t, "cp", "--sparse=always", src, dst) }

// fixed checks the repaired image: the original entry array in both
// copies, the backup at the last LBA, sgdisk -v clean, slots as in the
// layout, and the partitions' data untouched.
func fixed(t *testing.T, path string, size int64, origArr []byte, parts []esxi.Part, m map[int64][32]byte) {
	t.Helper()
	last := size/512 - 1
	if got := gpttest.ReadAt(t, path, 2*512, len(origArr)); !bytes.Equal(got, origArr) {
		t.Errorf("%s: primary entry array differs from the original", path)
	}
	if got := gpttest.ReadAt(t, path, (last-32)*512, len(origArr)); !bytes.Equal(got, origArr) {
		t.Errorf("%s: backup entry array at the new end differs from the original", path)
	}
	bh := gpttest.ReadAt(t, path, last*512, 512)
	if string(bh[:8]) != "EFI PART" || binary.LittleEndian.Uint64(bh[0x18:]) != uint64(last) {
		t.Errorf("%s: no backup header at the last LBA %d", path, last)
	}
	gpttest.SgdiskVerify(t, path)
	listed := map[string]bool{}
	for _, s := range gpttest.SgdiskSlots(t, path) {
		listed[s] = true
	}
	for _, p := range parts {
		if !listed[fmt.Sprintf("%d:%d-%d", p.Slot, p.First, p.Last)] {
			t.Errorf("sgdisk -p does not list entry %d at %d-%d: %v", p.Slot, p.First, p.Last, listed)
		}
	}
	gpttest.CheckMarkers(t, path, m)
}

// TestIncident runs the command on the incident: ESXi 5.0, 8 GiB copied
// to 12 GiB, entry array compacted.
func TestIncident(t *testing.T) {
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Fatal("sgdisk is needed (build.sh APT_PACKAGES installs gdisk)")
	}
	dir := t.TempDir()
	in := newIncident(t, dir, "5.0", 8*gib, 12*gib)
	orig, broken, parts, m, origArr := in.orig, in.broken, in.parts, in.markers, in.origArr
	brokenHead := gpttest.ReadAt(t, broken, 0, 34*512)

	// Plan only: exit 1, says what it would do, writes nothing.
	code, out, errOut := gptfix(t, "-esxi", broken)
	if code != 1 {
		t.Fatalf("gptfix -esxi (plan only): exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"ESXi 5.x", "exact", "move entries 5,6,7,8 from slots 4,5,6,7 back to slots 5,6,7,8",
		"zero slot 4", "backup GPT at the disk's last LBA 25165823 (was 16777215", "Nothing was written"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("gptfix -esxi %s:\n%s", filepath.Base(broken), out)
	if !bytes.Equal(brokenHead, gpttest.ReadAt(t, broken, 0, 34*512)) {
		t.Fatal("gptfix without -yes wrote to the disk")
	}
	// Without -esxi/-ref only the backup is moved: still exit 1.
	if code, out, _ := gptfix(t, broken); code != 1 || strings.Contains(out, "move entries") {
		t.Errorf("plain gptfix: exit %d\n%s", code, out)
	}
	if code, _, _ := gptfix(t, "-check", broken); code != 1 {
		t.Errorf("-check on the broken disk: exit %d, want 1", code)
	}
	// -check -esxi on the original: clean; on a copy only compacted
	// (same size, so the reader alone sees nothing wrong): entries out of
	// their slots.
	if code, out, _ := gptfix(t, "-check", "-esxi", orig); code != 0 {
		t.Errorf("-check -esxi on the original: exit %d\n%s", code, out)
	}
	sameSize := filepath.Join(dir, "same.img")
	cp(t, orig, sameSize)
	compactTable(t, sameSize, 512)
	if code, _, _ := gptfix(t, "-check", sameSize); code != 0 {
		t.Errorf("-check (no profile) on a compacted same-size disk: exit %d, want 0: nothing is wrong without a reference", code)
	}
	if code, out, _ := gptfix(t, "-check", "-esxi", "-yes", sameSize); code != 1 || !strings.Contains(out, "move entries 5,6,7,8") {
		t.Errorf("-check -esxi on a compacted disk: exit %d, want 1\n%s", code, out)
	}
	if !bytes.Equal(gpttest.ReadAt(t, sameSize, 1024, 128*128), gpttest.ReadAt(t, broken, 1024, 128*128)) {
		t.Error("-check -yes wrote to the disk")
	}

	undoDir := t.TempDir()
	for _, mode := range [][]string{{"-esxi"}, {"-ref", orig}} {
		t.Run(mode[0], func(t *testing.T) {
			work := filepath.Join(t.TempDir(), "work.img")
			cp(t, broken, work)
			args := append(append([]string{"-yes", "-undo-dir", undoDir}, mode...), work)
			code, out, errOut := gptfix(t, args...)
			if code != 0 {
				t.Fatalf("gptfix %v: exit %d\n%s%s", args, code, out, errOut)
			}
			fixed(t, work, 12*gib, origArr, parts, m)
			if code, out, _ := gptfix(t, "-check", work); code != 0 {
				t.Errorf("-check after the fix: exit %d\n%s", code, out)
			}
			if code, out, _ := gptfix(t, append(mode, work)...); code != 0 || !strings.Contains(out, "Nothing to do") {
				t.Errorf("second run: exit %d\n%s", code, out)
			}
			// Undo: shown without -yes, restored with it.
			undos, _ := filepath.Glob(filepath.Join(undoDir, "gptfix-undo-work.img-*.json"))
			if len(undos) == 0 {
				t.Fatal("no undo file written")
			}
			u := undos[len(undos)-1]
			if code, _, _ := gptfix(t, "-undo", u, work); code != 1 {
				t.Errorf("-undo without -yes: exit %d, want 1", code)
			}
			if code, out, errOut := gptfix(t, "-undo", u, "-yes", work); code != 0 {
				t.Fatalf("-undo -yes: exit %d\n%s%s", code, out, errOut)
			}
			if !bytes.Equal(brokenHead, gpttest.ReadAt(t, work, 0, 34*512)) {
				t.Error("undo did not restore the start of the disk")
			}
			os.Remove(u)
		})
	}

	// -json: machine-readable plan.
	code, out, _ = gptfix(t, "-json", "-esxi", broken)
	var r struct {
		Plan struct {
			Steps  []string
			Writes []struct{ LBA uint64 }
		}
		ESXi struct {
			Family  string
			SlotMap map[string]int `json:"slot_map"`
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 {
		t.Fatalf("-json: exit %d, %v\n%s", code, err, out)
	}
	if r.ESXi.Family != "5.x" || r.ESXi.SlotMap["4"] != 5 || len(r.Plan.Steps) == 0 || len(r.Plan.Writes) == 0 {
		t.Errorf("-json content: %+v", r)
	}
}

// TestReferenceFormats: a saved layout file and an sgdisk backup serve as
// references as well as the original image.
func TestReferenceFormats(t *testing.T) {
	dir := t.TempDir()
	in := newIncident(t, dir, "6.7", 10*gib, 11*gib)
	orig, broken, parts, m, origArr := in.orig, in.broken, in.parts, in.markers, in.origArr
	layout := filepath.Join(dir, "orig.json")
	if code, out, errOut := gptfix(t, "-check", "-save", layout, orig); code != 0 {
		t.Fatalf("-check -save: exit %d\n%s%s", code, out, errOut)
	}
	sgd := filepath.Join(dir, "orig.sgdisk")
	gpttest.Run(t, "sgdisk", "-b", sgd, orig)
	for _, ref := range []string{layout, sgd} {
		t.Run(filepath.Ext(ref), func(t *testing.T) {
			work := filepath.Join(t.TempDir(), "work.img")
			cp(t, broken, work)
			if code, out, errOut := gptfix(t, "-ref", ref, "-yes", "-undo-dir", t.TempDir(), work); code != 0 {
				t.Fatalf("exit %d\n%s%s", code, out, errOut)
			}
			fixed(t, work, 11*gib, origArr, parts, m)
		})
	}
}

// TestRefusals: errors exit 2 and write nothing.
func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.img")
	esxiImage(t, orig, "5.0", 8*gib)
	small := filepath.Join(dir, "small.img")
	cp(t, orig, small)
	os.Truncate(small, 7*gib)
	head := gpttest.ReadAt(t, small, 0, 34*512)
	linux := filepath.Join(dir, "linux.img")
	os.WriteFile(linux, nil, 0o600)
	os.Truncate(linux, 1*gib)
	gpttest.Run(t, "sgdisk", "-n", "1:2048:+100M", "-t", "1:8300", "-n", "2:0:0", linux)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-yes", "-undo-dir", dir, small}, "smaller than the table needs"},
		{[]string{"-esxi", "-yes", "-undo-dir", dir, linux}, "not an ESXi boot disk layout"},
		{[]string{"-esxi", "-ref", orig, small}, "not both"},
		{[]string{filepath.Join(dir, "missing.img")}, "no such file"},
		{[]string{"-undo", filepath.Join(dir, "orig.img"), "-yes", small}, "undo file"},
		{[]string{"-sector", "1000", small}, "sector size"},
		{[]string{}, "TARGET"},
	}
	for _, c := range cases {
		code, out, errOut := gptfix(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("gptfix %v: exit %d, want 2 with %q\n%s%s", c.args, code, c.want, out, errOut)
		}
	}
	if !bytes.Equal(head, gpttest.ReadAt(t, small, 0, 34*512)) {
		t.Error("a refused run wrote to the disk")
	}
}

// TestBinary builds the command and checks -h and the exit status of the
// real process.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gptfix")
	gpttest.Run(t, "go", "build", "-o", bin, ".")
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "GPTFIX_TEST_PAUSE") || !strings.Contains(string(out), "-esxi") {
		t.Errorf("gptfix -h: %v\n%s", err, out)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "d.img")
	esxiImage(t, img, "5.0", 8*gib)
	os.Truncate(img, 9*gib)
	err = exec.Command(bin, img).Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("plan with changes: %v, want exit status 1", err)
	}
	cmd := exec.Command(bin, "-yes", "-undo-dir", dir, img)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("-yes: %v\n%s", err, out)
	}
	if err := exec.Command(bin, "-check", img).Run(); err != nil {
		t.Errorf("-check after the fix: %v", err)
	}
}

// TestPowerCutAtPause kills the real process in the test pause between
// the backup and the primary write (what the QEMU power-cut test does to
// the whole machine): the disk must still be usable from one copy, and a
// second run must finish the repair.
func TestPowerCutAtPause(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gptfix")
	gpttest.Run(t, "go", "build", "-o", bin, ".")
	dir := t.TempDir()
	in := newIncident(t, dir, "5.0", 8*gib, 12*gib)
	img, parts, m, origArr := in.broken, in.parts, in.markers, in.origArr

	cmd := exec.Command(bin, "-esxi", "-yes", "-undo-dir", dir, img)
	cmd.Env = append(os.Environ(), "GPTFIX_TEST_PAUSE=60")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	var seen []byte
	for !bytes.Contains(seen, []byte("GPTFIX: PAUSE")) {
		n, err := stderr.Read(buf)
		seen = append(seen, buf[:n]...)
		if err != nil {
			cmd.Process.Kill()
			t.Fatalf("no pause marker before %v; stderr:\n%s", err, seen)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()

	// The old primary (compacted, pointing at the old backup) is intact
	// and the new backup at the end is complete: sgdisk loads the primary.
	out, _ := exec.Command("sgdisk", "-v", img).CombinedOutput()
	if strings.Contains(string(out), "Creating new GPT") || strings.Contains(string(out), "Main partition table: ERROR") {
		t.Errorf("after the cut sgdisk cannot use the primary:\n%s", out)
	}
	last := 12*gib/512 - 1
	if got := gpttest.ReadAt(t, img, (last-32)*512, len(origArr)); !bytes.Equal(got, origArr) {
		t.Error("the new backup array was not written before the pause")
	}
	// Running again finishes the job.
	if out, err := exec.Command(bin, "-esxi", "-yes", "-undo-dir", dir, img).CombinedOutput(); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	fixed(t, img, 12*gib, origArr, parts, m)
}

// TestBlockDevice repairs the incident through loop devices with 512- and
// 4096-byte logical sectors (sector size from BLKSSZGET, size from
// BLKGETSIZE64) and checks the kernel's own view of the partitions
// afterwards: sysfs must show partitions 1,2,3,5,6,7,8 and no 4.
func TestBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	for _, ss := range []int{512, 4096} {
		t.Run(fmt.Sprint(ss), func(t *testing.T) {
			v := esxi.Version("5.0")
			if ss == 4096 {
				v = "6.7"
			}
			size := 10 * gib
			parts := esxitest.Layout(t, v, size, ss)
			img := filepath.Join(t.TempDir(), "disk.img")
			os.WriteFile(img, nil, 0o600)
			os.Truncate(img, size)
			loop := attach(t, img, ss)
			gpttest.Sgdisk(t, loop, esxitest.Parts(parts, ss, false))
			exec.Command("blockdev", "--rereadpt", loop).Run()
			name := filepath.Base(loop)
			_, err := os.Stat(fmt.Sprintf("/sys/block/%s/%sp1", name, name))
			kernelScans := err == nil
			detach(loop)
			origArr := gpttest.ReadAt(t, img, int64(2*ss), 128*128)
			os.Truncate(img, size+2*gib)
			compactTable(t, img, ss)

			loop = attach(t, img, ss)
			defer detach(loop)
			code, out, errOut := gptfix(t, "-esxi", "-yes", "-undo-dir", t.TempDir(), loop)
			if code != 0 {
				t.Fatalf("gptfix -esxi -yes %s: exit %d\n%s%s", loop, code, out, errOut)
			}
			if strings.Contains(out, "Warning") {
				t.Errorf("output:\n%s", out)
			}
			gpttest.SgdiskVerify(t, loop)
			name = filepath.Base(loop)
			var have []string
			for _, p := range esxi.BySlot(parts) {
				if _, err := os.Stat(fmt.Sprintf("/sys/block/%s/%sp%d", name, name, p.Slot)); err == nil {
					have = append(have, fmt.Sprint(p.Slot))
				}
			}
			if !kernelScans {
				t.Log("this kernel does not scan GPT partitions on loop devices: kernel view not checked")
			} else if _, err := os.Stat(fmt.Sprintf("/sys/block/%s/%sp4", name, name)); err == nil || len(have) != len(parts) {
				t.Errorf("kernel partitions after the fix: %v (p4 present: %v), want every layout slot and no 4", have, err == nil)
			}
			detach(loop)
			if got := gpttest.ReadAt(t, img, int64(2*ss), 128*128); !bytes.Equal(got, origArr) {
				t.Error("primary entry array differs from the original")
			}
		})
	}
}

func attach(t *testing.T, img string, ss int) string {
	t.Helper()
	out, err := exec.Command("losetup", "-P", "-b", fmt.Sprint(ss), "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func detach(loop string) { exec.Command("losetup", "-d", loop).Run() }

// TestESXiImages repairs real ESXi images (esxi.Create: FAT boot banks
// with boot.cfg, VMFS, ...) after every kind of field damage (esxi.Damage,
// written without the gpt package) and checks what ESXi's boot loader
// would see (esxi.Inspect), that the fix left every partition's bytes as
// the damage left them, and that the entry array is the original's.
func TestESXiImages(t *testing.T) {
	type img struct {
		v    esxi.Version
		size int64
		ss   int
	}
	images := []img{{"5.0", 8 * gib, 512}, {"6.7", 10 * gib, 512}, {"7.0", 16 * gib, 4096}}
	modes := []string{"windows", "stale-backup", "sorted", "primary-crc", "backup-crc", "primary-zeroed"}
	for _, im := range images {
		t.Run(fmt.Sprintf("%s-%d", im.v, im.ss), func(t *testing.T) {
			dir := t.TempDir()
			orig := filepath.Join(dir, "orig.img")
			if err := esxi.Create(orig, esxi.CreateOptions{Version: im.v, Size: im.size, SectorSize: im.ss, Seed: 7}); err != nil {
				t.Fatal(err)
			}
			parts := esxitest.Layout(t, im.v, im.size, im.ss)
			origArr := gpttest.ReadAt(t, orig, int64(2*im.ss), 128*128)
			for _, mode := range modes {
				for _, how := range []string{"-esxi", "-ref"} {
					t.Run(mode+how, func(t *testing.T) {
						work := filepath.Join(t.TempDir(), "work.img")
						if err := esxi.Damage(work, mode, esxi.DamageOptions{Source: orig, SectorSize: im.ss}); err != nil {
							t.Fatal(err)
						}
						before, err := esxi.PartitionChecksums(work, parts)
						if err != nil {
							t.Fatal(err)
						}
						if mode == "windows" || mode == "sorted" || mode == "primary-zeroed" {
							// The damage must matter to ESXi, or this test proves nothing.
							fi, _ := os.Stat(work)
							f, _ := os.Open(work)
							rep, err := esxi.Inspect(f, fi.Size(), im.ss)
							f.Close()
							if err == nil && rep.OK {
								t.Fatalf("damage %s: Inspect says ESXi boots fine before the fix", mode)
							}
						}
						args := []string{"-yes", "-undo-dir", t.TempDir(), "-sector", fmt.Sprint(im.ss), how}
						if how == "-ref" {
							args = append(args, orig)
						}
						if code, out, errOut := gptfix(t, append(args, work)...); code != 0 {
							t.Fatalf("gptfix %v: exit %d\n%s%s", args, code, out, errOut)
						}
						after, err := esxi.PartitionChecksums(work, parts)
						if err != nil {
							t.Fatal(err)
						}
						if fmt.Sprint(before) != fmt.Sprint(after) {
							t.Errorf("partition data changed by the fix:\nbefore %v\nafter  %v", before, after)
						}
						fi, _ := os.Stat(work)
						last := fi.Size()/int64(im.ss) - 1
						if !bytes.Equal(gpttest.ReadAt(t, work, int64(2*im.ss), len(origArr)), origArr) ||
							!bytes.Equal(gpttest.ReadAt(t, work, (last-int64(16384/im.ss))*int64(im.ss), len(origArr)), origArr) {
							t.Error("entry arrays differ from the original's")
						}
						f, err := os.Open(work)
						if err != nil {
							t.Fatal(err)
						}
						rep, err := esxi.Inspect(f, fi.Size(), im.ss)
						f.Close()
						if err != nil || !rep.OK {
							t.Errorf("after the fix ESXi would not boot correctly: %v\n%+v", err, rep)
						}
						if im.ss == 512 {
							gpttest.SgdiskVerify(t, work)
						}
					})
				}
			}
			// A disk too small for the table is refused.
			work := filepath.Join(dir, "shrunk.img")
			if err := esxi.Damage(work, "shrunk", esxi.DamageOptions{Source: orig, SectorSize: im.ss}); err != nil {
				t.Fatal(err)
			}
			if code, _, errOut := gptfix(t, "-yes", "-esxi", "-undo-dir", dir, "-sector", fmt.Sprint(im.ss), work); code != 2 || !strings.Contains(errOut, "smaller") {
				t.Errorf("shrunk: exit %d\n%s", code, errOut)
			}
		})
	}
}

// TestMBRDisk: an ESXi disk with an MBR (msdos) table — a host upgraded
// from ESX(i) 4.x, made here with sfdisk — is explained and refused
// ("GPT tables only", exit 2) for -check, -esxi and -esxi -yes, and its
// table sectors stay as they were.
func TestMBRDisk(t *testing.T) {
	gpttest.Need(t, "sfdisk")
	dir := t.TempDir()
	mbr := filepath.Join(dir, "mbr.img")
	gpttest.Sparse(t, dir, "mbr.img", 8*gib)
	esxitest.MBRDisk(t, mbr)
	// The MBR's sectors and the GPT regions a rebuild would write.
	lbas := append([]int64{1, 2, 33, 8*gib/512 - 33, 8*gib/512 - 1}, esxitest.MBRTableLBAs...)
	tableSectors := func() []byte { return esxitest.Sectors(t, mbr, lbas) }
	before := tableSectors()
	for _, args := range [][]string{{"-check"}, {"-esxi"}, {"-esxi", "-yes"}} {
		code, stdout, stderr := gptfix(t, append(args, mbr)...)
		if code != 2 || !strings.Contains(stderr, "GPT tables only") || !strings.Contains(stderr, "upgraded from ESX(i) 4.x") {
			t.Errorf("gptfix %v on an MBR ESXi disk: exit %d\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
		}
	}
	if !bytes.Equal(tableSectors(), before) {
		t.Error("the MBR disk was changed")
	}
}
