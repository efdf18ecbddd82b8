package gpt

import (
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
}

// OpenDevice opens path read-only, or read-write when writable is set.
// sectorSize is the logical sector size for image files (0 means 512); a
// block device reports its own, and a non-zero sectorSize that disagrees
// with it is an error rather than silently ignored.
func OpenDevice(path string, sectorSize int, writable bool) (*Device, error) {
	if sectorSize != 0 && sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("gpt: sector size %d is not supported (512 or 4096)", sectorSize)
	}
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("gpt: %w", err)
	}
	d, err := newDevice(f, sectorSize)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("gpt: %s: %w", path, err)
	}
	return d, nil
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
		}
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
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

// ReadTable reads the device's GPT (see Read).
func (d *Device) ReadTable() (*Table, error) { return Read(d.File, d.Size, d.SectorSize) }

// ReadFile opens path (image file or block device) read-only and reads its
// GPT. sectorSize is used for image files (0 means 512).
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
