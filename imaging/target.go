package imaging

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/esxi-rescue/rescue/gpt"
)

// partialSuffix names the file a restore into a new file writes until it
// is complete and checked.
const partialSuffix = ".partial"

// target is the opened destination of a restore.
type target struct {
	path       string // what is written: Dst, or Dst.partial for a new file
	f          *os.File
	direct     *os.File // the block device opened again with O_DIRECT (nil if not possible)
	isBlock    bool
	size       int64  // current size (device size; file size)
	sectorSize int    // logical sector size of a block device, 0 for files
	fresh      bool   // a new or empty file: nothing to overwrite, holes cost nothing
	created    bool   // the file did not exist before: path is Dst.partial, renamed to Dst by commit
	partOf     string // for a partition: the whole disk's device path ("" for a disk)
	partNo     int
}

// commit renames a new file's DST.partial to DST (never over a DST that
// appeared meanwhile) and makes the rename durable.
func (t *target) commit(dst string) error {
	if !t.created {
		return nil
	}
	if err := unix.Renameat2(unix.AT_FDCWD, t.path, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return refused("%s appeared while the image was written to %s; the image is left there", dst, t.path)
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("renaming %s to %s: %w", t.path, dst, err)
		}
		// A filesystem without RENAME_NOREPLACE: link and unlink.
		if err := os.Link(t.path, dst); err != nil {
			return fmt.Errorf("renaming %s to %s: %w", t.path, dst, err)
		}
		os.Remove(t.path)
	}
	t.path = dst
	return syncDir(filepath.Dir(dst))
}

// close closes the target's files.
func (t *target) close() {
	if t.direct != nil {
		t.direct.Close()
		t.direct = nil
	}
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

// openTarget opens a restore target and runs the checks that need no
// knowledge of the image: it refuses a mounted or otherwise busy block
// device, the rescue medium, the source itself and anything that is neither
// a file nor a block device.
func openTarget(opt *Options, src *source) (*target, error) {
	t := &target{path: opt.Dst}
	fi, err := os.Stat(opt.Dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A new file is written as DST.partial and renamed at the end, so
		// a killed restore leaves no DST that a rerun would call too small
		// (or anyone would take for the image). A leftover DST.partial is
		// a killed restore's: it is replaced.
		t.path = opt.Dst + partialSuffix
		if pfi, err := os.Lstat(t.path); err == nil {
			if !pfi.Mode().IsRegular() {
				return nil, refused("%s exists and is not a regular file", t.path)
			}
			opt.logf("replacing %s, left by an earlier restore that did not finish", t.path)
			if err := os.Remove(t.path); err != nil {
				return nil, fmt.Errorf("removing %s: %w", t.path, err)
			}
		}
		f, err := os.OpenFile(t.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("creating %s: %w", t.path, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", t.path, err)
		}
		t.f, t.fresh, t.created = f, true, true
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("target: %w", err)
	}
	if src != nil && src.file != nil {
		if sfi, err := src.file.Stat(); err == nil && os.SameFile(fi, sfi) {
			return nil, refused("%s is the source itself", opt.Dst)
		}
	}
	switch {
	case fi.Mode().IsRegular():
		if err := checkTarget(opt.Dst, false, 0, nil); err != nil {
			return nil, err
		}
		if src != nil && src.isBlock {
			var sst unix.Stat_t
			if unix.Fstat(int(src.file.Fd()), &sst) == nil {
				if loop := loopOf(sst.Rdev, fi); loop != "" {
					return nil, refused("%s is the file behind the source %s (%s)", opt.Dst, opt.Src, loop)
				}
			}
		}
		dev, err := openHeld(opt.Dst)
		if err != nil {
			return nil, err
		}
		t.f, t.size, t.fresh = dev.File, fi.Size(), fi.Size() == 0
		return t, nil
	case fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0:
	default:
		return nil, fmt.Errorf("%s is neither a regular file nor a block device (%s)", opt.Dst, fi.Mode().Type())
	}
	var st unix.Stat_t
	if err := unix.Stat(opt.Dst, &st); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if src != nil && src.isBlock {
		var sst unix.Stat_t
		if unix.Fstat(int(src.file.Fd()), &sst) == nil && sst.Rdev == st.Rdev {
			return nil, refused("%s is the source device itself", opt.Dst)
		}
	}
	if err := checkTarget(opt.Dst, true, st.Rdev, opt.Refuse); err != nil {
		return nil, err
	}
	if sfi, err := srcStat(src); err == nil && sfi.Mode().IsRegular() {
		if loop := loopOf(st.Rdev, sfi); loop != "" {
			return nil, refused("%s is backed by the source file %s itself (through %s)", opt.Dst, opt.Src, loop)
		}
	}
	if b, err := sysBlock(st.Rdev); err == nil {
		if n, err := os.ReadFile(filepath.Join(b.dir, "partition")); err == nil {
			t.partOf = "/dev/" + filepath.Base(filepath.Dir(b.dir))
			fmt.Sscan(strings.TrimSpace(string(n)), &t.partNo)
		}
	}
	// gpt.OpenDevice holds the disk: BLKROGET (a read-only device is
	// refused before anything), O_EXCL (the kernel refuses it while
	// anything has the device or a partition claimed, e.g. mounted) and
	// flock (gptfix and other imgcopy runs wait for that).
	dev, err := openHeld(opt.Dst)
	if err != nil {
		return nil, err
	}
	f := dev.File
	t.f, t.isBlock = f, true
	// Big aligned writes go past the page cache (the rescue system runs
	// from RAM and a restore's data is never read again); odd-sized or
	// unaligned pieces and the partition table go through f.
	if d, err := os.OpenFile(opt.Dst, os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
		t.direct = d
	}
	sz, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		t.close()
		return nil, fmt.Errorf("%s: BLKGETSIZE64: %w", opt.Dst, err)
	}
	t.size = int64(sz)
	if t.sectorSize, err = unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err != nil {
		t.close()
		return nil, fmt.Errorf("%s: BLKSSZGET: %w", opt.Dst, err)
	}
	return t, nil
}

// describeTable returns a plain description of the partition table on the
// target ("" when it holds none).
func describeTable(r io.ReaderAt, size int64, sectorSize int) string {
	if sectorSize == 0 {
		sectorSize = 512
	}
	if d := describeGPT(r, size, sectorSize); d != "" {
		return d
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil || mbr[510] != 0x55 || mbr[511] != 0xAA {
		return ""
	}
	var b strings.Builder
	n := 0
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		if e[4] == 0 {
			continue
		}
		n++
		start := binary.LittleEndian.Uint32(e[8:])
		count := binary.LittleEndian.Uint32(e[12:])
		fmt.Fprintf(&b, "\n  %3d  type 0x%02x  LBA %d-%d  %s", i+1, e[4], start, uint64(start)+uint64(count)-1,
			gpt.HumanBytes(int64(count)*512))
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("an MBR partition table with %d partitions:%s", n, b.String())
}

// openHeld opens a restore target writable and held (gpt.OpenDevice:
// BLKROGET, O_EXCL, flock); busy and read-only targets are refused.
func openHeld(path string) (*gpt.Device, error) {
	dev, err := gpt.OpenDevice(path, 512, true)
	if err != nil && errors.Is(err, gpt.ErrBusy) {
		return nil, refused("%s is in use: %v", path, err)
	}
	if err != nil && errors.Is(err, gpt.ErrReadOnly) {
		return nil, refused("%s is read-only (BLKROGET): nothing was written: %v", path, err)
	}
	if err != nil && strings.Contains(err.Error(), "sectors, not 512") {
		dev, err = gpt.OpenDevice(path, 4096, true)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return dev, nil
}

// srcStat returns the FileInfo of an opened local source.
func srcStat(src *source) (os.FileInfo, error) {
	if src == nil || src.file == nil {
		return nil, errors.New("no local source")
	}
	return src.file.Stat()
}

// loopOf returns the name of the loop device that the block device rdev
// is (or a partition of, or stacked on) and that is backed by the file
// fi, "" when there is none. It asks the loop device itself
// (LOOP_GET_STATUS64: the backing file's device and inode), so a renamed
// or deleted backing file is still recognised.
func loopOf(rdev uint64, fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	for _, d := range wholeDisks(rdev, false) {
		if !strings.HasPrefix(d.name, "loop") {
			continue
		}
		fd, err := unix.Open("/dev/"+d.name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		info, err := unix.IoctlLoopGetStatus64(fd)
		unix.Close(fd)
		if err == nil && info.Device == uint64(st.Dev) && info.Inode == uint64(st.Ino) {
			return "/dev/" + d.name
		}
	}
	return ""
}
