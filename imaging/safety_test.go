package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/zeros"
	"golang.org/x/sys/unix"
)

func TestParseMountinfoLine(t *testing.T) {
	for _, tc := range []struct {
		line         string
		ok           bool
		maj, min     uint32
		point, sourc string
	}{
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue", true, 98, 0, "/mnt2", "/dev/root"},
		{"29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw", true, 254, 0, "/", "/dev/vda"},
		{`40 29 7:1 / /mnt/with\040space rw - vfat /dev/loop1p1 rw`, true, 7, 1, "/mnt/with space", "/dev/loop1p1"},
		{"22 27 0:21 / /proc rw,relatime - proc proc rw", true, 0, 21, "/proc", "proc"},
		{"garbage", false, 0, 0, "", ""},
		{"1 2 x:y / / rw - ext4 /dev/sda rw", false, 0, 0, "", ""},
	} {
		m, ok := parseMountinfoLine(tc.line)
		if ok != tc.ok {
			t.Errorf("%q: ok %v", tc.line, ok)
			continue
		}
		if ok && (m.dev != unix.Mkdev(tc.maj, tc.min) || m.point != tc.point || m.source != tc.sourc) {
			t.Errorf("%q: got %+v", tc.line, m)
		}
	}
}

// faultyReader returns EIO for reads touching [badStart, badEnd).
type faultyReader struct {
	r                io.ReaderAt
	badStart, badEnd int64
}

func (f faultyReader) ReadAt(p []byte, off int64) (int, error) {
	if off < f.badEnd && off+int64(len(p)) > f.badStart {
		good := max(f.badStart-off, 0)
		n, _ := f.r.ReadAt(p[:good], off)
		return n, &os.PathError{Op: "read", Path: "disk", Err: syscall.EIO}
	}
	return f.r.ReadAt(p, off)
}

func TestSourceReadErrors(t *testing.T) {
	gpttest.Need(t, "cmp")
	dir := t.TempDir()
	raw := dir + "/disk"
	makeImage(t, raw, 4<<20, 4096, 1, 31)
	const badStart, badEnd = 1<<20 + 1024, 1<<20 + 3072 // LBAs 2050..2053
	old := faultHook
	faultHook = func(r io.ReaderAt) io.ReaderAt { return faultyReader{r, badStart, badEnd} }
	defer func() { faultHook = old }()

	_, err := Copy(context.Background(), copyOpts(t, raw, dir+"/out1"))
	if err == nil || !strings.Contains(err.Error(), "LBA 2050") || !errors.Is(err, syscall.EIO) {
		t.Fatalf("want a read error naming LBA 2050, got %v", err)
	}
	t.Logf("error (as expected): %v", err)

	opt := copyOpts(t, raw, dir+"/out2")
	opt.SkipBad = true
	res := mustCopy(t, opt)
	if len(res.BadRanges) != 1 || res.BadRanges[0] != (Range{badStart, badEnd - badStart}) {
		t.Fatalf("bad ranges %+v, want [{%d %d}]", res.BadRanges, badStart, badEnd-badStart)
	}
	got := gpttest.ReadAt(t, dir+"/out2", badStart, badEnd-badStart)
	if !zeros.Is(got) {
		t.Errorf("bad range not zero-filled")
	}
	cmpFiles(t, raw, dir+"/out2", badStart)
	a, b := gpttest.ReadAt(t, raw, badEnd, 3<<20-3072), gpttest.ReadAt(t, dir+"/out2", badEnd, 3<<20-3072)
	if !bytes.Equal(a, b) {
		t.Errorf("data after the bad range differs")
	}
}

// TestRefuseRootDisk: the disk holding "/" is refused (checked without
// ever opening it for writing).
func TestRefuseRootDisk(t *testing.T) {
	mounts, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	var root mount
	for _, m := range mounts {
		if m.point == "/" {
			root = m
		}
	}
	d := root.dev
	if sd, ok := devOfPath(root.source); ok {
		d = sd
	}
	if unix.Major(d) == 0 {
		t.Skipf("/ is not on a block device here (%s)", root.source)
	}
	disks := wholeDisks(d, true)
	if len(disks) == 0 {
		t.Skipf("no sysfs entry for the root device %s", devString(d))
	}
	path := "/dev/" + disks[0].name
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		t.Skipf("%s does not exist", path)
	}
	err = checkTarget(path, true, st.Rdev, nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "running system's root filesystem") {
		t.Fatalf("root disk %s: want a refusal naming the running system, got %v", path, err)
	}
	t.Logf("refused as expected: %v", err)
}

func TestBlockDeviceTarget(t *testing.T) {
	needRoot(t)
	gpttest.Need(t, "sgdisk", "cmp")
	dir := t.TempDir()
	img := sgdiskImage(t, dir, 64<<20, testParts)
	backing := dir + "/disk"
	makeImage(t, backing, 96<<20, 1<<20, 1, 41) // stale data everywhere
	gpttest.Run(t, "sgdisk", "-a", "1", "-n", "1:2048:100000", backing)
	dev := gpttest.Loop(t, backing)

	opt := copyOpts(t, img, dev)
	opt.UndoPath = dir + "/undo"
	_, err := Copy(context.Background(), opt)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "already holds a GPT with 1 partitions") || !strings.Contains(err.Error(), "-yes") {
		t.Fatalf("want a refusal describing the existing table, got %v", err)
	}
	t.Logf("refused as expected: %v", err)

	opt.Yes, opt.Verify = true, true
	var log strings.Builder
	opt.Log = func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) }
	res := mustCopy(t, opt)
	if res.ZeroBytes == 0 {
		t.Errorf("no zero regions")
	}
	// The data went past the page cache, and -verify read it back from the device.
	if !strings.Contains(log.String(), "written with O_DIRECT") {
		t.Errorf("no O_DIRECT writes on a block device; log:\n%s", log.String())
	}
	out, clean := gpttest.SgdiskCheck(t, dev)
	if !clean {
		t.Errorf("sgdisk -v: %s", out)
	}
	checkSlotsKept(t, img, dev, 512, 100000)
	// Stale data where the image has zeros was cleared (BLKZEROOUT).
	zeroOff := int64(50000 * 512)
	if im := gpttest.ReadAt(t, img, zeroOff, 64<<10); !zeros.Is(im) {
		t.Fatalf("fixture: image not zero at %d", zeroOff)
	}
	if got := gpttest.ReadAt(t, dev, zeroOff, 64<<10); !zeros.Is(got) {
		t.Errorf("stale data left where the image has zeros")
	}

	// -assume-zeroed leaves whatever is there (that is what it promises).
	fillRandom(t, dev, zeroOff, 64<<10, 9)
	opt.AssumeZeroed, opt.UndoPath = true, dir+"/undo2"
	if _, err := Copy(context.Background(), opt); !errors.Is(err, ErrVerify) {
		t.Errorf("-assume-zeroed over stale data with -verify: want ErrVerify, got %v", err)
	}
	if got := gpttest.ReadAt(t, dev, zeroOff, 64<<10); zeros.Is(got) {
		t.Errorf("-assume-zeroed zeroed a region anyway")
	}
}

func TestBlockDevice4K(t *testing.T) {
	needRoot(t)
	gpttest.Need(t, "sgdisk")
	dir := t.TempDir()
	img4k := dir + "/img4k"
	lastUsed := diskfsImage4K(t, img4k, 64<<20)
	backing := gpttest.Sparse(t, dir, "disk", 96<<20)
	dev := gpttest.Loop(t, backing, "--sector-size", "4096")
	if ss, _ := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/queue/logical_block_size"); strings.TrimSpace(string(ss)) != "4096" {
		t.Skipf("loop device did not take 4096-byte sectors (%q)", ss)
	}
	opt := copyOpts(t, img4k, dev)
	opt.UndoPath = dir + "/undo"
	res := mustCopy(t, opt)
	checkSlotsKept(t, img4k, dev, 4096, lastUsed)
	if out, clean := gpttest.SgdiskCheck(t, dev); !clean {
		t.Errorf("sgdisk -v on the 4Kn loop device: %s", out)
	}
	t.Logf("%s", res.GPTFixup)
	// A 512-byte-sector image cannot work on this disk.
	img512 := sgdiskImage(t, dir, 64<<20, testParts)
	opt = copyOpts(t, img512, dev)
	opt.Yes = true
	if _, err := Copy(context.Background(), opt); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "sectors") {
		t.Errorf("512-byte image onto a 4Kn disk: want a refusal, got %v", err)
	}
}

func TestMountedTargetRefused(t *testing.T) {
	needRoot(t)
	gpttest.Need(t, "sgdisk", "mkfs.ext4")
	dir := t.TempDir()
	img := dir + "/img"
	makeImage(t, img, 4<<20, 4096, 1, 51)
	backing := gpttest.Sparse(t, dir, "disk", 64<<20)
	gpttest.Run(t, "sgdisk", "-n", "1:2048:0", backing)
	dev := gpttest.Loop(t, backing, "-P")
	part := dev + "p1"
	for i := 0; i < 40; i++ { // the partition node appears asynchronously
		if _, err := os.Stat(part); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(part); err != nil {
		// No node in /dev (no udev): make one from sysfs.
		name := filepath.Base(dev)
		if _, err := os.Stat("/sys/block/" + name + "/" + name + "p1"); err != nil {
			exec.Command("partx", "-a", dev).Run()
		}
		d, ok := readDevFile("/sys/block/" + name + "/" + name + "p1/dev")
		if !ok {
			t.Skipf("the kernel did not create partition 1 of %s", dev)
		}
		part = dir + "/" + name + "p1"
		if err := unix.Mknod(part, unix.S_IFBLK|0o600, int(d)); err != nil {
			t.Skipf("mknod %s: %v", part, err)
		}
	}
	gpttest.Run(t, "mkfs.ext4", "-q", part)
	mnt := dir + "/mnt"
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", part, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	before := gpttest.ReadAt(t, dev, 0, 1<<20)
	for _, target := range []string{dev, part, backing} {
		for _, delta := range []bool{false, true} {
			opt := copyOpts(t, img, target)
			opt.Yes, opt.Delta = true, delta
			_, err := Copy(context.Background(), opt)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "mounted on "+mnt) {
				t.Errorf("%s (delta %v): want a refusal saying it is mounted, got %v", target, delta, err)
			} else {
				t.Logf("refused as expected (delta %v): %v", delta, err)
			}
		}
	}
	if !bytes.Equal(before, gpttest.ReadAt(t, dev, 0, 1<<20)) {
		t.Errorf("the mounted disk was written")
	}
}

func TestENOSPC(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	img := dir + "/img"
	makeImage(t, img, 8<<20, 4096, 1, 61)
	mnt := dir + "/small"
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	_, err := Copy(context.Background(), copyOpts(t, img, mnt+"/out"))
	if err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("want ENOSPC, got %v", err)
	}
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("unclear message: %v", err)
	}
	t.Logf("error (as expected): %v", err)
}

func TestNotAFileOrDisk(t *testing.T) {
	dir := t.TempDir()
	img := dir + "/img"
	makeImage(t, img, 1<<20, 4096, 1, 71)
	for _, dst := range []string{"/dev/null", dir} {
		if _, err := Copy(context.Background(), copyOpts(t, img, dst)); err == nil {
			t.Errorf("%s accepted as a target", dst)
		}
	}
	if _, err := Copy(context.Background(), copyOpts(t, img, "-")); err == nil {
		t.Errorf("restore to stdout accepted")
	}
	if _, err := os.Stat("-"); err == nil {
		t.Errorf("a file named - was created")
	}
	if _, err := Copy(context.Background(), copyOpts(t, img, img)); !errors.Is(err, ErrRefused) {
		t.Errorf("source as its own target: %v", err)
	}
	if _, err := Copy(context.Background(), copyOpts(t, dir+"/missing", dir+"/x")); err == nil {
		t.Errorf("missing source accepted")
	}
}
