package gpt

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Device is an open disk or image file with its size and logical sector
// size. For block devices both come from the kernel (BLKGETSIZE64,
// BLKSSZGET); for files the size is the file size and the sector size is
// what the caller said.
type Device struct {
	*os.File
	Size       int64 // bytes
	SectorSize int   // 512 or 4096
	IsBlock    bool  // a block device, not a regular file
	// Detected is set when SectorSize was not given but found: an image
	// file opened with sectorSize 0 whose GPT is only valid when read
	// with 4096-byte sectors (a 4Kn disk's image).
	Detected bool
}

// ErrBusy is returned (wrapped) by OpenDevice with writable set when
// another program has the disk open for writing: a block device claimed
// by someone else (the kernel refuses O_EXCL: mounted, in a RAID or LVM,
// or opened exclusively by another gptfix or imgcopy), or a block device
// or image file whose flock(2) another process holds.
var ErrBusy = errors.New("another program has the disk open")

// ErrReadOnly is returned (wrapped) by OpenDevice with writable set for a
// block device the kernel marks read-only (BLKROGET: a write-protected
// disk, a read-only loop device, ...).
var ErrReadOnly = errors.New("the device is read-only")

// OpenDevice opens path read-only, or read-write when writable is set.
// sectorSize is the logical sector size for image files; 0 means 512
// unless only 4096-byte sectors show a valid GPT (primary or backup),
// then 4096 (Device.Detected). A block device reports its own, and a
// non-zero sectorSize that disagrees with it is an error rather than
// silently ignored.
//
// Anything but a regular file or a block device (a FIFO, a character
// device, a directory) is refused before it is opened, so that open(2)
// never blocks on a FIFO without a writer.
//
// A writable open is exclusive for as long as the Device is open: a block
// device is checked with BLKROGET (ErrReadOnly) and opened with O_EXCL,
// and both block devices and files are locked with flock(LOCK_EX|LOCK_NB)
// (the lock systemd-udevd and sfdisk --lock honour); when either is held
// elsewhere the error wraps ErrBusy. The exclusion is per open file, so
// the same process cannot open a path writable twice either: pass the
// Device on instead.
func OpenDevice(path string, sectorSize int, writable bool) (*Device, error) {
	if sectorSize != 0 && sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("gpt: sector size %d is not supported (512 or 4096)", sectorSize)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("gpt: %w", err)
	}
	block := isBlock(fi.Mode())
	if !fi.Mode().IsRegular() && !block {
		return nil, fmt.Errorf("gpt: %s is not a regular file or block device (%s)", path, modeName(fi.Mode()))
	}
	if writable && block {
		if err := checkWritable(path); err != nil {
			return nil, err
		}
	}
	flag := unix.O_RDONLY
	if writable {
		flag = unix.O_RDWR
		if block {
			flag |= unix.O_EXCL
		}
	}
	// O_NONBLOCK: should path have been swapped for a FIFO since the
	// Stat, open(2) still returns at once and the Fstat below refuses it.
	fd, err := unix.Open(path, flag|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if writable && block && errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("gpt: %s: %w (the kernel refused exclusive access: it is mounted, part of a RAID or LVM, or opened by another program)", path, ErrBusy)
		}
		return nil, fmt.Errorf("gpt: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("gpt: %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if err := prepare(f, fi, writable); err != nil {
		f.Close()
		return nil, fmt.Errorf("gpt: %s: %w", path, err)
	}
	d, err := newDevice(f, sectorSize)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("gpt: %s: %w", path, err)
	}
	return d, nil
}

// prepare checks that the opened f is still what Stat saw (fi), makes it
// when writable, takes the exclusive flock.
func prepare(f *os.File, fi os.FileInfo, writable bool) error {
	got, err := f.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(fi, got) {
		return errors.New("the path changed while it was being opened")
	}
	if !writable {
		return nil
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%w (another process holds its lock)", ErrBusy)
		}
		return fmt.Errorf("locking: %w", err)
	}
	return nil
}

// checkWritable fails with ErrReadOnly when the kernel marks the block
// device at path read-only.
func checkWritable(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("gpt: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	ro, err := unix.IoctlGetInt(fd, unix.BLKROGET)
	if err != nil {
		return fmt.Errorf("gpt: %s: BLKROGET: %w", path, err)
	}
	if ro != 0 {
		return fmt.Errorf("gpt: %s: %w (the kernel marks it read-only: write-protected, or a read-only loop device; blockdev --setrw clears it if that is safe)", path, ErrReadOnly)
	}
	return nil
}

func isBlock(m os.FileMode) bool { return m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0 }

func modeName(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m.IsDir():
		return "a directory"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return m.Type().String()
}

func newDevice(f *os.File, sectorSize int) (*Device, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d := &Device{File: f, Size: fi.Size(), SectorSize: sectorSize}
	switch {
	case fi.Mode().IsRegular():
		if d.SectorSize == 0 {
			d.SectorSize = 512
			if t, err := Read(f, d.Size, 512); err == nil && t.Best() == nil && d.hasGPT(4096) {
				d.SectorSize, d.Detected = 4096, true
			}
		}
	case isBlock(fi.Mode()):
		d.IsBlock = true
		fd := int(f.Fd())
		ss, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
		if err != nil {
			return nil, fmt.Errorf("BLKSSZGET: %w", err)
		}
		if ss != 512 && ss != 4096 {
			return nil, fmt.Errorf("logical sector size %d is not supported (512 or 4096)", ss)
		}
		if sectorSize != 0 && sectorSize != ss {
			return nil, fmt.Errorf("the device has %d-byte sectors, not %d as requested", ss, sectorSize)
		}
		d.SectorSize = ss
		size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
		if err != nil {
			return nil, fmt.Errorf("BLKGETSIZE64: %w", err)
		}
		d.Size = int64(size)
	default:
		return nil, fmt.Errorf("not a regular file or block device (%s)", fi.Mode().Type())
	}
	return d, nil
}

// hasGPT reports whether the disk shows a valid GPT copy when read with
// ss-byte sectors.
func (d *Device) hasGPT(ss int) bool {
	t, err := Read(d.File, d.Size, ss)
	return err == nil && t.Best() != nil
}

// OtherSectorGPT returns the other logical sector size (4096 for a
// 512-byte device, 512 for a 4096-byte one) when the disk also shows a
// valid GPT copy read with it, else 0. Such a table means the sector size
// in use may be the wrong one (a 4Kn image read as 512, or copied onto a
// disk of the other kind): nothing should be rebuilt over it.
func (d *Device) OtherSectorGPT() int {
	other := 4096
	if d.SectorSize == 4096 {
		other = 512
	}
	if d.hasGPT(other) {
		return other
	}
	return 0
}

// ReadTable reads the device's GPT (see Read).
func (d *Device) ReadTable() (*Table, error) { return Read(d.File, d.Size, d.SectorSize) }

// ReadFile opens path (image file or block device) read-only and reads its
// GPT. sectorSize is used for image files (0: 512, or 4096 when only that
// shows a GPT; see OpenDevice).
func ReadFile(path string, sectorSize int) (*Table, error) {
	d, err := OpenDevice(path, sectorSize, false)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	t, err := d.ReadTable()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}
