package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	dgpt "github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/esxitest"
	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

// sgdiskImage makes a sparse image of size bytes in dir, partitioned by
// sgdisk (an independent GPT writer, through gpttest.SgdiskImage), each
// partition named "partN", with random data at the start and end of every
// partition, and returns its path.
func sgdiskImage(t testing.TB, dir string, size int64, parts []gpttest.Part) string {
	t.Helper()
	named := make([]gpttest.Part, len(parts))
	for i, p := range parts {
		p.Name = fmt.Sprintf("part%d", p.Slot)
		named[i] = p
	}
	path := gpttest.SgdiskImage(t, dir, size, named)
	for _, p := range parts {
		fillRandom(t, path, int64(p.First)*512, 8192, uint64(p.Slot))
		fillRandom(t, path, int64(p.Last+1)*512-8192, 8192, uint64(p.Slot)+100)
	}
	return path
}

// testParts: slots 1, 5 and 2 in disk order 1,5,2 (gaps at 3 and 4).
var testParts = []gpttest.Part{
	{Slot: 1, First: 2048, Last: 10239, Type: "EF00"},
	{Slot: 5, First: 10240, Last: 40959, Type: "0700"},
	{Slot: 2, First: 40960, Last: 100000, Type: "8300"},
}

func readTable(t testing.TB, path string, ss int) *gpt.Table {
	t.Helper()
	tb, err := gpt.ReadFile(path, ss)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// checkSlotsKept checks that both entry arrays on the target are
// byte-identical to the image's, the backup sits at the target's last LBA,
// and the partition contents are the image's.
func checkSlotsKept(t *testing.T, img, dst string, ss int, lastUsed uint64) {
	t.Helper()
	it, tt := readTable(t, img, ss), readTable(t, dst, ss)
	if tt.Primary == nil || tt.Backup == nil || !tt.Primary.Valid() || !tt.Backup.Valid() {
		t.Fatalf("target table: primary %v backup %v; problems %v", tt.Primary != nil, tt.Backup != nil, tt.Problems)
	}
	if !bytes.Equal(tt.Primary.Array, it.Primary.Array) {
		t.Errorf("primary entry array differs from the image's")
	}
	if !bytes.Equal(tt.Backup.Array, it.Primary.Array) {
		t.Errorf("backup entry array differs from the image's")
	}
	if tt.Backup.HeaderLBA != tt.LastLBA() {
		t.Errorf("backup header at LBA %d, want the target's last LBA %d", tt.Backup.HeaderLBA, tt.LastLBA())
	}
	for _, p := range tt.Problems {
		t.Errorf("gpt problem on target: %v", p)
	}
	// Partition data is the image's, compared with cmp(1): all of it up to
	// the last used LBA on small images; on big sparse ones the first and
	// last MiB of every partition (where the fixtures put data), so the
	// test does not spend its time reading gigabytes of holes.
	start := int64(2+32*512/ss) * int64(ss)
	if ss == 4096 {
		start = 6 * 4096
	}
	n := (int64(lastUsed)+1)*int64(ss) - start
	ranges := [][2]int64{{start, n}}
	if n > 256<<20 {
		ranges = nil
		for _, sl := range it.Slots() {
			if !sl.Used() {
				continue
			}
			e := sl.Entry()
			first, end := int64(e.First)*int64(ss), (int64(e.Last)+1)*int64(ss)
			k := min(int64(1<<20), end-first)
			ranges = append(ranges, [2]int64{first, k}, [2]int64{end - k, k})
		}
	}
	for _, r := range ranges {
		if out, err := exec.Command("cmp", "-i", fmt.Sprintf("%d:%d", r[0], r[0]), "-n", strconv.FormatInt(r[1], 10), img, dst).CombinedOutput(); err != nil {
			t.Errorf("partition data differs: %v %s", err, out)
		}
	}
}

func TestGPTTargetSizes(t *testing.T) {
	gpttest.Need(t, "sgdisk", "cmp")
	dir := t.TempDir()
	const imgSize = 64 << 20
	img := sgdiskImage(t, dir, imgSize, testParts)
	const lastUsed = 100000
	need := int64(lastUsed+1) * 512
	for _, tc := range []struct {
		name    string
		size    int64
		noFixup bool
		wantErr string
	}{
		{name: "larger", size: 96 << 20},
		{name: "equal", size: imgSize},
		{name: "smaller-fits", size: 56 << 20},
		{name: "smaller-by-one-sector", size: need - 512, wantErr: "512 bytes) too small"},
		{name: "too-small", size: 48 << 20, wantErr: fmt.Sprintf("%d bytes) too small", need-48<<20)},
		{name: "larger-no-fixup", size: 96 << 20, noFixup: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := gpttest.Sparse(t, t.TempDir(), "disk", tc.size)
			opt := copyOpts(t, img, dst)
			opt.NoGPTFixup = tc.noFixup
			opt.UndoPath = t.TempDir() + "/undo"
			opt.Verify = true
			res, err := Copy(context.Background(), opt)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want refusal containing %q, got %v", tc.wantErr, err)
				}
				t.Logf("refused as expected: %v", err)
				if b := gpttest.ReadAt(t, dst, 0, 1<<20); !zeros.Is(b) {
					t.Errorf("the refused target was written")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !res.HasGPT || res.LastUsedLBA != lastUsed {
				t.Errorf("HasGPT %v LastUsedLBA %d, want true %d", res.HasGPT, res.LastUsedLBA, lastUsed)
			}
			if fi, _ := os.Stat(dst); fi.Size() != tc.size {
				t.Errorf("target size changed to %d", fi.Size())
			}
			t.Logf("GPT: %s", res.GPTFixup)
			out, clean := gpttest.SgdiskCheck(t, dst)
			switch {
			case tc.size == imgSize:
				cmpFiles(t, img, dst, -1)
				if res.UndoPath != "" {
					t.Errorf("equal size: a fix-up was written (%s)", res.GPTFixup)
				}
				if !clean {
					t.Errorf("sgdisk -v: %s", out)
				}
			case tc.noFixup:
				cmpFiles(t, img, dst, imgSize)
				if clean || res.UndoPath != "" {
					t.Errorf("-no-gpt-fixup: the table was changed (sgdisk -v: %s)", out)
				}
			default:
				if !clean {
					t.Errorf("sgdisk -v after the fix-up: %s", out)
				}
				if _, err := os.Stat(res.UndoPath); err != nil {
					t.Errorf("no undo file: %v", err)
				}
				checkSlotsKept(t, img, dst, 512, lastUsed)
			}
		})
	}
}

// diskfsImage4K makes an image with 4096-byte sectors with go-diskfs.
func diskfsImage4K(t testing.TB, path string, size int64) uint64 {
	t.Helper()
	d, err := diskfs.Create(path, size, diskfs.SectorSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &dgpt.Table{LogicalSectorSize: 4096, PhysicalSectorSize: 4096, ProtectiveMBR: true,
		Partitions: []*dgpt.Partition{
			{Index: 1, Start: 256, End: 2559, Type: dgpt.EFISystemPartition, Name: "sys"},
			{Index: 5, Start: 2560, End: 8191, Type: dgpt.MicrosoftBasicData, Name: "bank"},
			{Index: 3, Start: 8192, End: 12000, Type: dgpt.LinuxFilesystem, Name: "data"},
		}}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for i, lba := range []int64{256, 2560, 8192, 12000} {
		fillRandom(t, path, lba*4096, 4096, uint64(i))
	}
	return 12000
}

func TestGPT4KSectors(t *testing.T) {
	gpttest.Need(t, "cmp")
	dir := t.TempDir()
	img := dir + "/img"
	lastUsed := diskfsImage4K(t, img, 64<<20)
	dst := gpttest.Sparse(t, dir, "disk", 100<<20)
	opt := copyOpts(t, img, dst)
	opt.UndoPath = dir + "/undo"
	res := mustCopy(t, opt)
	if res.SectorSize != 4096 || res.LastUsedLBA != lastUsed {
		t.Fatalf("sector size %d last used %d, want 4096 %d", res.SectorSize, res.LastUsedLBA, lastUsed)
	}
	checkSlotsKept(t, img, dst, 4096, lastUsed)
	// Too small in 4K sectors.
	small := gpttest.Sparse(t, dir, "small", 40<<20)
	if _, err := Copy(context.Background(), copyOpts(t, img, small)); !errors.Is(err, ErrRefused) {
		t.Errorf("40 MiB target for a table ending at 4K LBA %d: want refusal, got %v", lastUsed, err)
	}
	// An explicit wrong sector size is an error.
	opt = copyOpts(t, img, dir+"/other")
	opt.SectorSize = 512
	if _, err := Copy(context.Background(), opt); err == nil {
		t.Errorf("-sector-size 512 on a 4K image accepted")
	}
}

// TestIncidentESXi50 is the incident: an ESXi 5.0 disk image (slot 4 empty,
// entries not in disk order, 5..8 in the array's second sector) restored
// onto a bigger disk keeps both entry arrays byte-identical to the image and
// leaves a table sgdisk finds clean.
func TestIncidentESXi50(t *testing.T) {
	gpttest.Need(t, "sgdisk", "cmp")
	layout := esxitest.Layout(t, "5.0", 7<<30, 512)
	// The brief's table with a small datastore, so the image stays ~5 GiB sparse.
	var parts []gpttest.Part
	var lastUsed uint64
	codes := map[string]string{esxi.TypeEFISystem: "EF00", esxi.TypeBasicData: "0700", esxi.TypeVMFS: "FB00", esxi.TypeVMKDiagnostic: "FC00"}
	for _, p := range layout {
		if p.Slot == 3 {
			p.Last = p.First + 2047
		}
		parts = append(parts, gpttest.Part{Slot: p.Slot, First: p.First, Last: p.Last, Type: codes[p.Type]})
		lastUsed = max(lastUsed, p.Last)
	}
	if len(parts) != 7 {
		t.Fatalf("ESXi 5.0 layout has %d partitions, want 7", len(parts))
	}
	dir := t.TempDir()
	img := sgdiskImage(t, dir, int64(lastUsed+34)*512, parts)
	it := readTable(t, img, 512)
	slots := it.Slots()
	if slots[3].Used() || !slots[4].Used() || !slots[7].Used() {
		t.Fatalf("fixture: slot 4 should be empty and 5..8 used")
	}
	dst := gpttest.Sparse(t, dir, "bigger-disk", 8<<30)
	opt := copyOpts(t, img, dst)
	opt.BufferSize = 4 << 20
	opt.UndoPath = dir + "/undo"
	res := mustCopy(t, opt)
	t.Logf("%s", res.GPTFixup)
	checkSlotsKept(t, img, dst, 512, lastUsed)
	if out, clean := gpttest.SgdiskCheck(t, dst); !clean {
		t.Errorf("sgdisk -v: %s", out)
	}
	// sgdisk still lists partitions 1,2,3,5,6,7,8 by the same numbers.
	out := gpttest.Run(t, "sgdisk", "-p", dst)
	for _, p := range parts {
		if !strings.Contains(out, fmt.Sprintf("\n   %d        %11d", p.Slot, p.First)) && !strings.Contains(out, fmt.Sprintf("   %d ", p.Slot)) {
			t.Errorf("sgdisk -p does not list partition %d:\n%s", p.Slot, out)
		}
	}
}

// TestTruncatedImage: a raw image that ends inside its last partition is
// an error; one trimmed after its last partition restores with the backup
// GPT rebuilt.
func TestTruncatedImage(t *testing.T) {
	gpttest.Need(t, "sgdisk", "cmp")
	dir := t.TempDir()
	img := sgdiskImage(t, dir, 64<<20, testParts)
	cut := func(name string, n int64) string {
		p := dir + "/" + name
		gpttest.Run(t, "cp", "--sparse=always", img, p)
		if err := os.Truncate(p, n); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := cut("truncated", 30<<20)
	dst := dir + "/out1"
	if _, err := Copy(context.Background(), copyOpts(t, bad, dst)); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("want a truncation error, got %v", err)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Errorf("the failed restore left %s behind", dst)
	}
	trimmed := cut("trimmed", 100001*512)
	dst = dir + "/out2"
	opt := copyOpts(t, trimmed, dst)
	opt.UndoPath = dir + "/undo"
	res := mustCopy(t, opt)
	t.Logf("%s", res.GPTFixup)
	if fi, _ := os.Stat(dst); fi.Size() != 64<<20 {
		t.Errorf("target size %d, want the image's disk size %d", fi.Size(), 64<<20)
	}
	if out, clean := gpttest.SgdiskCheck(t, dst); !clean {
		t.Errorf("sgdisk -v: %s", out)
	}
	checkSlotsKept(t, img, dst, 512, 100000)
}

// TestESXiCreatedImage restores images built by esxi.Create (go-diskfs
// GPT and FAT file systems, ESXi slot layout) onto bigger disks: both
// entry arrays stay byte-identical, sgdisk (512) finds no problem, and
// mtools still reads the boot bank by its slot-5 offset.
func TestESXiCreatedImage(t *testing.T) {
	gpttest.Need(t, "sgdisk", "mdir", "cmp")
	for _, tc := range []struct {
		v    esxi.Version
		size int64
		ss   int
	}{
		{"5.0", 1 << 30, 512},
		{"6.5", 1 << 30, 4096},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.v, tc.ss), func(t *testing.T) {
			dir := t.TempDir()
			img := dir + "/esxi.img"
			if err := esxi.Create(img, esxi.CreateOptions{Version: tc.v, Size: tc.size, SectorSize: tc.ss, Seed: 7}); err != nil {
				t.Fatal(err)
			}
			it := readTable(t, img, tc.ss)
			dst := gpttest.Sparse(t, dir, "disk", tc.size+256<<20)
			opt := copyOpts(t, img, dst)
			opt.UndoPath, opt.Verify = dir+"/undo", true
			res := mustCopy(t, opt)
			if res.SectorSize != tc.ss || !res.Verified {
				t.Errorf("sector size %d verified %v", res.SectorSize, res.Verified)
			}
			checkSlotsKept(t, img, dst, tc.ss, it.LastUsedLBA())
			if tc.ss == 512 {
				if out, clean := gpttest.SgdiskCheck(t, dst); !clean {
					t.Errorf("sgdisk -v: %s", out)
				}
			}
			var bank5 uint64
			for _, s := range readTable(t, dst, tc.ss).Slots() {
				if s.Index == 5 {
					bank5 = s.Entry().First
				}
			}
			out := gpttest.Run(t, "mdir", "-i", fmt.Sprintf("%s@@%d", dst, bank5*uint64(tc.ss)), "::")
			if !strings.Contains(strings.ToLower(out), "boot") {
				t.Errorf("mdir of slot 5 on the target: %s", out)
			}
		})
	}
}
