package system

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/internal/esxitest"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/console"
)

const gib = int64(1) << 30

func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/" + name); err2 != nil {
			t.Fatalf("%s is not installed (APT_PACKAGES in build.sh)", name)
		}
		p = "/usr/sbin/" + name
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func parse(t *testing.T, line string) *cmdline.Config {
	t.Helper()
	c, err := cmdline.Parse(cmdline.Split(line, "test", false))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newSystem(t *testing.T) (*System, *bytes.Buffer) {
	var buf bytes.Buffer
	s := New(console.New(&buf))
	s.TmpDir = t.TempDir()
	return s, &buf
}

// sfdiskParts maps partition number to "start+size" as sfdisk (util-linux)
// reads the table, an independent GPT reader.
func sfdiskParts(t *testing.T, img string) map[string]string {
	t.Helper()
	var d struct {
		Partitiontable struct {
			Partitions []struct {
				Node  string `json:"node"`
				Start int64  `json:"start"`
				Size  int64  `json:"size"`
				Type  string `json:"type"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(tool(t, "sfdisk", "--json", img)), &d); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, p := range d.Partitiontable.Partitions {
		n := strings.TrimPrefix(p.Node, img)
		m[n] = fmt.Sprintf("%d+%d %s", p.Start, p.Size, p.Type)
	}
	return m
}

// compacted makes the incident's damage with sgdisk, not our code: the
// disk grown by 1 GiB with the backup moved to the end (-e), and entries
// 5..8 moved up one slot to close the gap at 4 (-r transposes).
func compacted(t *testing.T, pristine, path string) {
	t.Helper()
	tool(t, "cp", "--sparse=always", pristine, path)
	st, _ := os.Stat(path)
	if err := os.Truncate(path, st.Size()+gib); err != nil {
		t.Fatal(err)
	}
	tool(t, "sgdisk", "-e", "-r", "4:5", path)
	tool(t, "sgdisk", "-r", "5:6", path)
	tool(t, "sgdisk", "-r", "6:7", path)
	tool(t, "sgdisk", "-r", "7:8", path)
}

func TestFixVerifyESXiLayout(t *testing.T) {
	dir := t.TempDir()
	pristine := filepath.Join(dir, "pristine.img")
	if err := esxi.Create(pristine, esxi.CreateOptions{Version: "5.0", Size: 2 * gib, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	compacted(t, pristine, disk)
	want := sfdiskParts(t, pristine)
	if got := sfdiskParts(t, disk); fmt.Sprint(got) == fmt.Sprint(want) {
		t.Fatalf("the damage did not change the slots: %v", got)
	}

	ctx := context.Background()
	c := parse(t, "rescue.action=fix,verify rescue.target=/dev/sdz")
	s, log := newSystem(t)
	if _, err := s.Reference(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, c, disk); err == nil || !strings.Contains(err.Error(), "boot check") {
		t.Fatalf("Verify of the compacted disk = %v, want a failed boot check:\n%s", err, log)
	}
	res, err := s.Fix(ctx, c, disk)
	if err != nil {
		t.Fatalf("Fix: %v\n%s", err, log)
	}
	fr := res.(*FixResult)
	if !fr.Applied {
		t.Fatalf("Fix applied nothing: %+v", fr)
	}
	if _, err := os.Stat(fr.UndoPath); err != nil || !strings.HasPrefix(fr.UndoPath, s.TmpDir) {
		t.Errorf("undo file %q: %v", fr.UndoPath, err)
	}
	if !strings.Contains(log.String(), "undo file "+fr.UndoPath) {
		t.Errorf("the undo file's location was not printed:\n%s", log)
	}
	if n := strings.Count(log.String(), "fix: undo file "); n != 1 {
		t.Errorf("the line \"fix: undo file ...\" was printed %d times, want once:\n%s", n, log)
	}
	if n := strings.Count(log.String(), fr.UndoPath); n != 1 {
		t.Errorf("the undo file's path was printed %d times, want once:\n%s", n, log)
	}
	vr, err := s.Verify(ctx, c, disk)
	if err != nil {
		t.Fatalf("Verify after Fix: %v\n%s", err, log)
	}
	if b := vr.(*VerifyResult).Boot; b == nil || !b.OK || b.Chosen != 5 {
		t.Errorf("Verify's boot check after the fix: %+v", b)
	}
	// Independent checks: sgdisk finds no problem, sfdisk sees every
	// partition at its original number, and the primary entry array is
	// byte for byte the pristine one.
	if out := tool(t, "sgdisk", "-v", disk); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v after the fix:\n%s", out)
	}
	if got := sfdiskParts(t, disk); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sfdisk after the fix: %v\nwant %v", got, want)
	}
	tool(t, "cmp", "-i", "1024:1024", "-n", "16384", pristine, disk)

	// Idempotent: a second fix writes nothing.
	res, err = s.Fix(ctx, c, disk)
	if err != nil || res.(*FixResult).Applied {
		t.Errorf("second Fix = %+v, %v; want nothing applied", res, err)
	}
}

func TestRestoreFixVerifyFromCompressedImage(t *testing.T) {
	dir := t.TempDir()
	pristine := filepath.Join(dir, "pristine.img")
	const size = 1 * gib
	if err := esxi.Create(pristine, esxi.CreateOptions{Version: "5.0", Size: size, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	zst := pristine + ".zst"
	tool(t, "zstd", "-q", "-1", "-T2", pristine, "-o", zst)
	disk := filepath.Join(dir, "bigger.img")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, size+gib)

	ctx := context.Background()
	c := parse(t, "rescue.action=restore,fix,verify rescue.image="+zst+" rescue.target=/dev/sdz")
	s, log := newSystem(t)
	s.VerifyCopy = false // cmp below checks the copy, faster
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	if _, err := s.Reference(ctx, c); err != nil {
		t.Fatalf("Reference: %v\n%s", err, log)
	}
	if s.imageTab == nil || s.imageTab.DiskSize != size || MinDiskSize(s.imageTab) > size {
		t.Fatalf("image table %+v", s.imageTab)
	}
	if _, err := s.Restore(ctx, c, disk); err != nil {
		t.Fatalf("Restore: %v\n%s", err, log)
	}
	if _, err := s.Fix(ctx, c, disk); err != nil {
		t.Fatalf("Fix: %v\n%s", err, log)
	}
	if _, err := s.Verify(ctx, c, disk); err != nil {
		t.Fatalf("Verify: %v\n%s", err, log)
	}

	if out := tool(t, "sgdisk", "-v", disk); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v after restore and fix:\n%s", out)
	}
	if got, want := sfdiskParts(t, disk), sfdiskParts(t, pristine); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sfdisk: %v\nwant %v", got, want)
	}
	// The partitions' contents are the image's: the first 4 MiB of each
	// (boot sector, FATs, boot bank magic and files) compared with cmp.
	for _, p := range sfdiskParts(t, pristine) {
		var start, n int64
		fmt.Sscanf(p, "%d+%d", &start, &n)
		off := fmt.Sprint(start * 512)
		tool(t, "cmp", "-i", off+":"+off, "-n", fmt.Sprint(min(n*512, 4<<20)), pristine, disk)
	}
}

func TestRestoreWrongChecksumWritesNothing(t *testing.T) {
	dir := t.TempDir()
	pristine := filepath.Join(dir, "pristine.img")
	if err := esxi.Create(pristine, esxi.CreateOptions{Version: "5.0", Size: gib, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "target.img")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, 2*gib)
	c := parse(t, "rescue.action=restore rescue.image="+pristine+" rescue.sha256="+strings.Repeat("ab", 32)+" rescue.target=/dev/sdz")
	s, log := newSystem(t)
	if _, err := s.Restore(context.Background(), c, disk); err == nil {
		t.Fatalf("Restore with a wrong checksum succeeded:\n%s", log)
	}
	// imaging writes the image's first sectors (its GPT) last, after the
	// checksum: the target still has no partition table.
	if out, _ := exec.Command("sgdisk", "-p", disk).CombinedOutput(); strings.Contains(string(out), "Number  Start") && strings.Contains(string(out), "\n   1 ") {
		t.Errorf("the target got a partition table despite the checksum mismatch:\n%s", out)
	}
}

// TestFixESXiFindings: the fix prints what each ESXi loader generation
// would have booted; an MBR (msdos) ESXi disk is refused with an
// explanation, not a parse error, and left unchanged.
func TestFixESXiFindings(t *testing.T) {
	dir := t.TempDir()
	pristine := filepath.Join(dir, "pristine.img")
	if err := esxi.Create(pristine, esxi.CreateOptions{Version: "5.0", Size: 2 * gib, Seed: 8}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	compacted(t, pristine, disk)
	ctx := context.Background()
	c := parse(t, "rescue.action=fix,verify rescue.target=/dev/sdz")
	s, log := newSystem(t)
	if _, err := s.Reference(ctx, c); err != nil {
		t.Fatal(err)
	}
	res, err := s.Fix(ctx, c, disk)
	if err != nil {
		t.Fatalf("Fix: %v\n%s", err, log)
	}
	if fr := res.(*FixResult); fr.BootBefore == nil || len(fr.BootBefore.Loaders) != len(esxi.LoaderGens) {
		t.Errorf("no per-loader report before the fix: %+v", fr.BootBefore)
	}
	if !strings.Contains(log.String(), "before fix: ESXi 5.0 to 6.7u1 would boot") {
		t.Errorf("loader lines missing:\n%s", log)
	}

	mbr := filepath.Join(dir, "mbr.img")
	if err := os.WriteFile(mbr, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(mbr, 8*gib); err != nil {
		t.Fatal(err)
	}
	esxitest.MBRDisk(t, mbr)
	tableSectors := func() []byte { return esxitest.Sectors(t, mbr, esxitest.MBRTableLBAs) }
	before := tableSectors()
	_, err = s.Fix(ctx, c, mbr)
	if err == nil || !strings.Contains(err.Error(), "GPT tables only") || !strings.Contains(err.Error(), "upgraded from ESX(i) 4.x") {
		t.Errorf("Fix of an MBR ESXi disk: %v", err)
	}
	if !bytes.Equal(tableSectors(), before) {
		t.Error("the MBR disk was changed")
	}
}

// TestRestoreKeepsOldTableUndo: a hands-off restore that fails (wrong
// SHA-256) over a disk that had a table leaves that table invalidated by
// imaging and its undo file in the run's undo list (so in the report and,
// when booted from the stick, on it); the recorded document puts the old
// table back byte for byte, checked with sgdisk -p.
func TestRestoreKeepsOldTableUndo(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "esxi.img")
	if err := esxi.Create(img, esxi.CreateOptions{Version: "5.0", Size: gib, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "target.img")
	if err := esxi.Create(disk, esxi.CreateOptions{Version: "6.0", Size: 2 * gib, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	before := tool(t, "sgdisk", "-p", disk)
	c := parse(t, "rescue.action=restore rescue.image="+img+" rescue.sha256="+strings.Repeat("ab", 32)+" rescue.target=/dev/sdz")
	s, log := newSystem(t)
	if _, err := s.Restore(context.Background(), c, disk); err == nil {
		t.Fatalf("Restore with a wrong checksum succeeded:\n%s", log)
	}
	undos := s.Undos()
	if len(undos) != 1 || undos[0].Step != "restore" || undos[0].Device != disk || len(undos[0].Data) == 0 {
		t.Fatalf("undo files after the failed restore: %+v\n%s", undos, log)
	}
	if !strings.Contains(log.String(), "restore: undo file "+undos[0].File) {
		t.Errorf("the console does not name the undo file %s:\n%s", undos[0].File, log)
	}
	if out, _ := exec.Command("sgdisk", "-p", disk).CombinedOutput(); string(out) == before {
		t.Fatalf("the old table is still valid after the failed restore:\n%s", out)
	}
	// The recorded document itself (as the report carries it), not the file.
	doc := filepath.Join(t.TempDir(), "from-report.json")
	if err := os.WriteFile(doc, undos[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	dev, err := gpt.OpenDevice(disk, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	err = gpt.ApplyUndo(dev, doc)
	dev.Close()
	if err != nil {
		t.Fatalf("ApplyUndo: %v", err)
	}
	if after := tool(t, "sgdisk", "-p", disk); after != before {
		t.Errorf("sgdisk -p after the undo:\n%s\nwas\n%s", after, before)
	}
}

// TestRestoreDelta: rescue.delta=1 restores onto a disk that already
// holds the image with a few changed blocks, writing little, and the
// result is the image (cmp).
func TestRestoreDelta(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "esxi.img")
	if err := esxi.Create(img, esxi.CreateOptions{Version: "5.0", Size: gib, Seed: 6}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "target.img")
	tool(t, "cp", "--sparse=always", img, disk)
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{8 << 20, 300 << 20, 700 << 20} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	c := parse(t, "rescue.action=restore rescue.image="+img+" rescue.target=/dev/sdz rescue.delta=1")
	s, log := newSystem(t)
	s.VerifyCopy = false
	r, err := s.Restore(context.Background(), c, disk)
	if err != nil {
		t.Fatalf("Restore: %v\n%s", err, log)
	}
	res := r.(*imaging.Result)
	if res.Delta == nil || res.Delta.Written > 2<<20 || res.Delta.Identical < gib-(2<<20) {
		t.Errorf("delta figures %+v, want at most 2 MiB written\n%s", res.Delta, log)
	}
	if !strings.Contains(log.String(), "restore: delta: read 1.0 GiB of the target") {
		t.Errorf("the console does not show the delta figures:\n%s", log)
	}
	tool(t, "cmp", img, disk)
}
