package imaging

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"golang.org/x/sys/unix"
)

// blkidType is what blkid (util-linux, an independent prober) says a
// file or device holds ("" for nothing).
func blkidType(t testing.TB, path string) string {
	t.Helper()
	out, _ := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", path).Output()
	return strings.TrimSpace(string(out))
}

// TestOverwriteNeedsYes: without -yes a restore refuses an existing image
// file holding a GPT and a target holding a filesystem, volume or RAID
// signature but no table, showing what is there; blkid agrees there is
// something. With -yes it goes ahead.
func TestOverwriteNeedsYes(t *testing.T) {
	gpttest.Need(t, "sgdisk", "blkid", "mkfs.ext4", "mkfs.vfat", "mkswap")
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	makeImage(t, img, 8<<20, 64<<10, 0.5, 1)
	patch := func(off int64, b string) func(t *testing.T, p string) {
		return func(t *testing.T, p string) { gpttest.Patch(t, p, []byte(b), off) }
	}
	mkfs := func(cmd ...string) func(t *testing.T, p string) {
		return func(t *testing.T, p string) { gpttest.Run(t, cmd[0], append(cmd[1:], p)...) }
	}
	for _, tc := range []struct {
		name  string
		make  func(t *testing.T, p string)
		blkid string // blkid's TYPE ("" = blkid does not recognise our minimal header)
		want  string
	}{
		{"GPT image file", func(t *testing.T, p string) {
			gpttest.Sgdisk(t, p, []gpttest.Part{{Slot: 1, First: 2048, Last: 10000, Type: "8300"}})
		}, "", "a GPT with 1 partitions"},
		{"ext4", mkfs("mkfs.ext4", "-q", "-F"), "ext4", "an ext2/3/4 filesystem"},
		{"vfat", mkfs("mkfs.vfat"), "vfat", "FAT"},
		{"swap", mkfs("mkswap"), "swap", "Linux swap"},
		{"VMFS", patch(1<<20, "\x0d\xd0\x01\xc0"), "VMFS_volume_member", "a VMFS volume"},
		{"LVM2", patch(512, "LABELONE\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00LVM2 001"), "", "an LVM2 physical volume"},
		{"md 1.2", patch(4096, "\xfc\x4e\x2b\xa9"), "", "a Linux RAID (md 1.2) member"},
		{"ISO 9660", patch(32769, "CD001"), "", "an ISO 9660 image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "target")
			if err := os.WriteFile(dst, make([]byte, 16<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			tc.make(t, dst)
			if tc.blkid != "" {
				if got := blkidType(t, dst); got != tc.blkid {
					t.Fatalf("fixture: blkid says %q, want %q", got, tc.blkid)
				}
			}
			before, _ := os.ReadFile(dst)
			opt := copyOpts(t, img, dst)
			_, err := Copy(context.Background(), opt)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "-yes") {
				t.Fatalf("without -yes: want a refusal naming %q and -yes, got %v", tc.want, err)
			}
			t.Logf("refused: %v", err)
			if after, _ := os.ReadFile(dst); string(after) != string(before) {
				t.Fatalf("the target changed although the restore was refused")
			}
			opt.Yes = true
			mustCopy(t, opt)
			cmpFiles(t, img, dst, 8<<20)
		})
	}
}

// TestBlockDeviceTargets: on loop devices, a signature without a table
// needs -yes; a partition given for the whole disk is refused without
// -yes (naming the disk) and warned about loudly with it; a read-only
// device is refused before anything; a loop device backed by the source
// file is the source itself.
func TestBlockDeviceTargets(t *testing.T) {
	needRoot(t)
	gpttest.Need(t, "sgdisk", "mkfs.ext4", "blkid")
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	makeImage(t, img, 4<<20, 64<<10, 0.5, 2)

	t.Run("filesystem, no table", func(t *testing.T) {
		back := filepath.Join(t.TempDir(), "disk")
		os.WriteFile(back, make([]byte, 32<<20), 0o644)
		gpttest.Run(t, "mkfs.ext4", "-q", "-F", back)
		dev := gpttest.Loop(t, back)
		if blkidType(t, dev) != "ext4" {
			t.Fatalf("fixture: blkid %s says %q", dev, blkidType(t, dev))
		}
		_, err := Copy(context.Background(), copyOpts(t, img, dev))
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "ext2/3/4") {
			t.Fatalf("want a refusal naming the filesystem, got %v", err)
		}
	})
	t.Run("partition for the disk", func(t *testing.T) {
		back := gpttest.SgdiskImage(t, t.TempDir(), 32<<20, []gpttest.Part{{Slot: 1, First: 2048, Last: 40000, Type: "8300"}})
		dev := gpttest.Loop(t, back, "-P")
		part := dev + "p1"
		if _, err := os.Stat(part); err != nil {
			// The partition scan may not have happened (partx adds it),
			// and without udev/devtmpfs (a container) there is no node:
			// make it from sysfs.
			exec.Command("partx", "-a", dev).Run()
			b, err := os.ReadFile("/sys/class/block/" + filepath.Base(part) + "/dev")
			if err != nil {
				t.Skipf("the kernel made no partition device for %s: %v", dev, err)
			}
			var maj, mn uint32
			if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &mn); err != nil {
				t.Fatal(err)
			}
			part = filepath.Join(t.TempDir(), filepath.Base(part))
			if err := unix.Mknod(part, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, mn))); err != nil {
				t.Skipf("mknod %s: %v", part, err)
			}
		}
		_, err := Copy(context.Background(), copyOpts(t, img, part))
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "partition 1 of the disk "+dev) {
			t.Fatalf("want a refusal naming the partition and %s, got %v", dev, err)
		}
		t.Logf("refused: %v", err)
		var log strings.Builder
		opt := copyOpts(t, img, part)
		opt.Yes = true
		opt.Log = func(f string, a ...any) { log.WriteString(strings.TrimSpace(f) + "\n"); t.Logf(f, a...) }
		mustCopy(t, opt)
		if !strings.Contains(log.String(), "WARNING: %s is PARTITION") {
			t.Errorf("no loud warning about writing into a partition:\n%s", log.String())
		}
	})
	t.Run("read-only device", func(t *testing.T) {
		back := filepath.Join(t.TempDir(), "disk")
		os.WriteFile(back, make([]byte, 16<<20), 0o644)
		dev := gpttest.Loop(t, back, "-r")
		opt := copyOpts(t, img, dev)
		opt.Yes = true
		_, err := Copy(context.Background(), opt)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("want a read-only refusal, got %v", err)
		}
	})
	t.Run("loop device of the source", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "img")
		makeImage(t, src, 8<<20, 64<<10, 0.5, 3)
		dev := gpttest.Loop(t, src)
		before, _ := os.ReadFile(src)
		opt := copyOpts(t, src, dev)
		opt.Yes = true
		_, err := Copy(context.Background(), opt)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "backed by the source file") {
			t.Fatalf("want a refusal (the loop device is the source), got %v", err)
		}
		// And the other way round: the loop device as the source, its file as the target.
		opt = copyOpts(t, dev, src)
		opt.Yes = true
		_, err = Copy(context.Background(), opt)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "the file behind the source") {
			t.Fatalf("want a refusal (the file is behind the source loop device), got %v", err)
		}
		if after, _ := os.ReadFile(src); string(after) != string(before) {
			t.Errorf("the source changed")
		}
	})
}

// TestTargetLockedAndRefuse: a target another process holds (flock, as
// gptfix does) is refused as in use; -refuse naming no device is an error.
func TestTargetLockedAndRefuse(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	makeImage(t, img, 2<<20, 64<<10, 0.5, 4)
	dst := filepath.Join(dir, "target")
	os.WriteFile(dst, make([]byte, 4<<20), 0o644)
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = Copy(context.Background(), copyOpts(t, img, dst))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "another program has the disk open") {
		t.Fatalf("want an in-use refusal, got %v", err)
	}
	// Nor is a source another program is writing (it holds the lock) read.
	_, err = Copy(context.Background(), copyOpts(t, dst, filepath.Join(dir, "copy")))
	f.Close()
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "being written by another program") {
		t.Fatalf("want a refusal of the locked source, got %v", err)
	}
	opt := copyOpts(t, img, dst)
	opt.Refuse = []string{"/dev/no-such-disk"}
	if _, err := Copy(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "-refuse /dev/no-such-disk") {
		t.Fatalf("-refuse with a missing device: %v", err)
	}
	mustCopy(t, copyOpts(t, img, dst))
}
