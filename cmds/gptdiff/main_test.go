package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
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

// esxiImage partitions a sparse image of size bytes with sgdisk in the
// ESXi layout of version v, every partition at its slot.
func esxiImage(t *testing.T, dir, name, v string, size int64) string {
	t.Helper()
	parts := esxitest.Layout(t, esxi.Version(v), size, 512)
	p := gpttest.Sparse(t, dir, name, size)
	gpttest.Sgdisk(t, p, esxitest.Parts(parts, 512, false))
	return p
}

// rawCopy copies the GPT regions (first 34 and last 33 sectors) of src to
// the same offsets of a new sparse image of size bytes: a raw block copy
// onto a bigger disk, as far as the partition table is concerned.
func rawCopy(t *testing.T, src, dst string, size int64) {
	t.Helper()
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	gpttest.Sparse(t, filepath.Dir(dst), filepath.Base(dst), size)
	for _, r := range gpttest.Regions(fi.Size(), 512) {
		if r[0]+r[1] > size {
			continue // a smaller disk: the end of the source is cut off
		}
		gpttest.CopyRegions(t, src, dst, r)
	}
}

// compactBoth rewrites both entry arrays of an image with ss-byte sectors
// with the gaps closed and both CRCs recomputed: the incident's damage,
// written independently of the gpt package.
func compactBoth(t *testing.T, path string, ss int) {
	t.Helper()
	gpttest.EditArrays(t, path, ss, gpttest.Compact128)
}

func gptdiff(args ...string) (int, string, string) {
	var o, e bytes.Buffer
	code := run(args, &o, &e)
	return code, o.String(), e.String()
}

// TestIncident: the ESXi 5.0 table of an 8 GiB image restored onto a
// 12 GiB disk and compacted; gptdiff says so and exits 1.
func TestIncident(t *testing.T) {
	dir := t.TempDir()
	ref := esxiImage(t, dir, "esxi50.img", "5.0", 8*gib)
	restored := filepath.Join(dir, "restored.img")
	rawCopy(t, ref, restored, 12*gib)
	broken := filepath.Join(dir, "broken.img")
	rawCopy(t, ref, broken, 12*gib)
	compactBoth(t, broken, 512)
	// sgdisk simply lists the compacted partitions as 1-7.
	if out, _ := exec.Command("sgdisk", "-p", broken).CombinedOutput(); !strings.Contains(string(out), "\n   4            8224          520191 ") {
		t.Fatalf("sgdisk -p:\n%s", out)
	}

	code, out, errs := gptdiff(ref, broken)
	t.Logf("gptdiff %s %s:\n%s", filepath.Base(ref), filepath.Base(broken), out)
	if code != 1 || errs != "" {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{
		"Verdict: DIFFERENT. Entries 5,6,7,8 moved up one slot: the entry array was compacted",
		"ESXi looks for its boot banks at entries 5 and 6 and will not boot correctly",
		"*    4  (empty)    ", "Basic Data     8224-520191         250.0 MiB  was slot 5",
		"slots 9-128 are empty in both",
		"backup GPT is at LBA 16777215, not at the disk's last LBA 25165823",
		"gptfix -ref REF TARGET",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// Only restored onto a bigger disk: same slots, but gptfix would move
	// the backup: exit 1 and the repair said; -slots-only: exit 0.
	code, out, _ = gptdiff(ref, restored)
	if code != 1 || !strings.Contains(out, "Verdict: SAME SLOTS, BUT THE TARGET NEEDS A REPAIR") || !strings.Contains(out, "write the backup GPT at the disk's last LBA") {
		t.Errorf("restored: exit %d, want 1 and the repair\n%s", code, out)
	}
	code, out, _ = gptdiff("-slots-only", ref, restored)
	if code != 0 || !strings.Contains(out, "Verdict: SAME.") || !strings.Contains(out, "not at the end of the disk") {
		t.Errorf("restored, -slots-only: exit %d\n%s", code, out)
	}
	// After gptfix's repair (done here by sgdisk -e, independently) it is SAME.
	gpttest.Run(t, "sgdisk", "-e", restored)
	if code, out, _ := gptdiff(ref, restored); code != 0 || !strings.Contains(out, "Verdict: SAME.") {
		t.Errorf("restored and moved by sgdisk -e: exit %d\n%s", code, out)
	}

	// Restored onto a smaller disk: partition 3 is cut off.
	shrunk := filepath.Join(dir, "shrunk.img")
	rawCopy(t, ref, shrunk, 6*gib)
	code, out, _ = gptdiff(ref, shrunk)
	if code != 1 || !strings.Contains(out, "The target disk (6.0 GiB) is smaller than the reference (8.0 GiB)") ||
		!strings.Contains(out, "runs past the end of the disk") {
		t.Errorf("shrunk: exit %d\n%s", code, out)
	}

	// -json
	code, out, _ = gptdiff("-json", ref, broken)
	var js struct {
		Same bool
		Diff struct {
			Layout  string
			Mapping map[string]int
			Verdict string
		}
		Target struct{ Kind string }
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("-json: %v\n%s", err, out)
	}
	if code != 1 || js.Same || js.Diff.Layout != "compacted" || js.Diff.Mapping["5"] != 4 || js.Diff.Mapping["8"] != 7 || js.Target.Kind != "image" {
		t.Errorf("-json: exit %d %+v", code, js)
	}

	// -save, then the saved layout and an sgdisk backup serve as REF.
	layout := filepath.Join(dir, "orig.json")
	if code, out, errs := gptdiff("-save", layout, ref); code != 0 || !strings.Contains(out, "saved") {
		t.Fatalf("-save: exit %d %s %s", code, out, errs)
	}
	bak := filepath.Join(dir, "orig.sgdisk")
	if out, err := exec.Command("sgdisk", "-b", bak, ref).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk -b: %v\n%s", err, out)
	}
	for _, r := range []string{layout, bak} {
		code, out, _ := gptdiff(r, broken)
		if code != 1 || !strings.Contains(out, "compacted") {
			t.Errorf("REF %s: exit %d\n%s", filepath.Base(r), code, out)
		}
		if code, out, _ := gptdiff(r, ref); code != 0 {
			t.Errorf("REF %s vs its own disk: exit %d\n%s", filepath.Base(r), code, out)
		}
	}
	if _, out, _ := gptdiff(layout, ref); !strings.Contains(out, "(layout file, 8.0 GiB") {
		t.Errorf("kind not shown:\n%s", out)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	img := esxiImage(t, dir, "a.img", "6.0", 4*gib)
	small := filepath.Join(dir, "small")
	os.WriteFile(small, make([]byte, 1000), 0o644)
	for _, args := range [][]string{
		{},
		{img},
		{img, img, img},
		{"-sector", "1000", img, img},
		{img, filepath.Join(dir, "missing")},
		{filepath.Join(dir, "missing"), img},
		{img, small},
		{img, dir},
		{"-nosuchflag", img, img},
	} {
		if code, _, errs := gptdiff(args...); code != 2 || errs == "" {
			t.Errorf("gptdiff %v: exit %d, stderr %q", args, code, errs)
		}
	}
	if code, _, errs := gptdiff("-h"); code != 0 || !strings.Contains(errs, "slot by slot") {
		t.Errorf("-h: exit %d", code)
	}
	// An image without any GPT is a difference, not an error.
	empty := filepath.Join(dir, "empty.img")
	os.WriteFile(empty, make([]byte, 1<<20), 0o644)
	if code, out, _ := gptdiff(img, empty); code != 1 || !strings.Contains(out, "Verdict: DIFFERENT. The target has no readable GPT") {
		t.Errorf("no GPT: exit %d\n%s", code, out)
	}
}

// Test4K partitions a 4Kn image with sgdisk through a loop device with
// 4096-byte sectors (sgdisk cannot from a file), compacts it, and compares
// with -sector 4096. Needs root for the loop device.
func Test4K(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	const size = 12 * gib
	parts := esxitest.Layout(t, "6.7", size, 4096)
	dir := t.TempDir()
	ref := gpttest.Sparse(t, dir, "ref4k.img", size)
	out, err := exec.Command("losetup", "--show", "-f", "--sector-size", "4096", ref).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	func() {
		defer exec.Command("losetup", "-d", dev).Run()
		gpttest.Sgdisk(t, dev, esxitest.Parts(parts, 4096, false))
	}()
	broken := gpttest.Sparse(t, dir, "broken4k.img", size)
	gpttest.CopyRegions(t, ref, broken, gpttest.Regions(size, 4096)...)
	compactBoth(t, broken, 4096)
	code, o, e := gptdiff("-sector", "4096", ref, broken)
	if code != 1 || !strings.Contains(o, "Entries 5,6,7,8,9 moved up one slot: the entry array was compacted") || !strings.Contains(o, "4096-byte sectors") {
		t.Errorf("exit %d %s\n%s", code, e, o)
	}
	if code, o, _ := gptdiff("-sector", "4096", ref, ref); code != 0 {
		t.Errorf("same: exit %d\n%s", code, o)
	}
	// Read with the wrong sector size there is no GPT: a difference, said so.
	if code, o, _ := gptdiff("-ref-sector", "4096", "-sector", "512", ref, broken); code != 1 || !strings.Contains(o, "no readable GPT") || !strings.Contains(o, "use -sector 4096") {
		t.Errorf("wrong sector size: exit %d\n%s", code, o)
	}
	// Without -sector the 4Kn images are found to be 4Kn.
	if code, o, e := gptdiff(ref, broken); code != 1 || !strings.Contains(o, "the entry array was compacted") || !strings.Contains(o, "4096-byte sectors") {
		t.Errorf("no -sector: exit %d %s\n%s", code, e, o)
	}
}

// Test4KImageVsDevice: a 4Kn image against a 4Kn device (loop device
// with 4096-byte sectors) holding the same table is SAME with no flags:
// the image's sector size is found from its GPT, the device's from the
// kernel.
func Test4KImageVsDevice(t *testing.T) {
	const size = 12 * gib
	parts := esxitest.Layout(t, "6.7", size, 4096)
	dir := t.TempDir()
	img := gpttest.Sparse(t, dir, "4k.img", size)
	gpttest.NewTable(t, 4096, size, esxitest.Parts(parts, 4096, false)).Write(t, img)
	copyImg := filepath.Join(dir, "copy.img")
	gpttest.Run(t, "cp", "--sparse=always", img, copyImg)
	dev := gpttest.Loop(t, copyImg, "-r", "--sector-size", "4096")
	code, o, e := gptdiff(img, dev)
	if code != 0 || !strings.Contains(o, "SAME") {
		t.Errorf("gptdiff 4k.img %s: exit %d %s\n%s", dev, code, e, o)
	}
	if code, o, e := gptdiff(dev, img); code != 0 {
		t.Errorf("gptdiff %s 4k.img: exit %d %s\n%s", dev, code, e, o)
	}
}

// TestESXiFindings: comparing a restored, Windows-compacted 7.0 disk made
// on another disk with its reference names each loader generation's
// choice, the snapshot trap with the esxcli commands, and the Windows
// leftovers; the reference against itself has no such findings.
func TestESXiFindings(t *testing.T) {
	dir := t.TempDir()
	ref, other, tgt := filepath.Join(dir, "ref.img"), filepath.Join(dir, "other.img"), filepath.Join(dir, "tgt.img")
	for i, p := range []string{ref, other} {
		if err := esxi.Create(p, esxi.CreateOptions{Version: "7.0", Size: 40 * gib, Seed: int64(60 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := esxi.Damage(tgt, "windows", esxi.DamageOptions{Source: other}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := gptdiff(ref, tgt)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"ESXi on the target, beyond the table",
		"boot bank at entry 2",
		"this disk's loader: ESXi 7.0 to 7.0u1 would boot entry 2",
		"ESXi 5.0 to 6.7u1 would boot nothing",
		"ESXi 7.0 to 7.0u1 would boot entry 2",
		"esxcli storage vmfs snapshot list",
		"Windows leftovers",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if _, out, _ := gptdiff(ref, ref); strings.Contains(out, "snapshot") || strings.Contains(out, "Windows") || strings.Contains(out, "would boot nothing") {
		t.Errorf("findings on the reference itself:\n%s", out)
	}
	// -json carries the same findings.
	_, out, _ = gptdiff("-json", ref, tgt)
	var js struct {
		ESXi []string `json:"esxi"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("-json: %v\n%s", err, out)
	}
	all := strings.Join(js.ESXi, "\n")
	for _, want := range []string{"ESXi 5.0 to 6.7u1 would boot nothing", "esxcli storage vmfs snapshot list", "Windows leftovers"} {
		if !strings.Contains(all, want) {
			t.Errorf("-json esxi lacks %q: %q", want, js.ESXi)
		}
	}
	if _, out, _ := gptdiff("-json", ref, ref); strings.Contains(out, `"esxi"`) && strings.Contains(out, "snapshot") {
		t.Errorf("-json findings on the reference itself:\n%s", out)
	}
}

// TestNeedsRepair: a target whose headers' LastUsableLBA runs past the
// disk end matches its reference slot for slot but is not SAME: gptfix
// (like sgdisk -e) would repair it. A layout file as target is only a
// table: nothing to repair there.
func TestNeedsRepair(t *testing.T) {
	dir := t.TempDir()
	ref := esxiImage(t, dir, "ref.img", "6.7", 8*gib)
	tgt := filepath.Join(dir, "tgt.img")
	rawCopy(t, ref, tgt, 8*gib)
	last := uint64(8*gib/512 - 1)
	for _, lba := range []uint64{1, last} {
		gpttest.RewriteCopy(t, tgt, 512, lba, func(h, a []byte) { binary.LittleEndian.PutUint64(h[0x30:], last+64) })
	}
	code, out, errs := gptdiff(ref, tgt)
	if code != 1 || !strings.Contains(out, "NEEDS A REPAIR") || !strings.Contains(out, "set the last LBA usable for partitions") {
		t.Errorf("LastUsableLBA past the end: exit %d, want 1 and the repair\n%s%s", code, out, errs)
	}
	code, out, _ = gptdiff("-json", ref, tgt)
	var js struct {
		Same      bool `json:"same"`
		SameSlots bool `json:"same_slots"`
		Repair    struct{ Needed bool }
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || code != 1 || js.Same || !js.SameSlots || !js.Repair.Needed {
		t.Errorf("-json: exit %d %v %+v", code, err, js)
	}
	layout := filepath.Join(dir, "tgt.json")
	if code, _, errs := gptdiff("-save", layout, ref); code != 0 {
		t.Fatal(errs)
	}
	if code, out, _ := gptdiff(ref, layout); code != 0 {
		t.Errorf("layout file as target: exit %d\n%s", code, out)
	}
}
