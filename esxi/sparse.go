package esxi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// extent is a byte range [Off, Off+Len) of a file.
type extent struct{ Off, Len int64 }

// dataExtents returns the ranges of f below size that may hold data, using
// SEEK_DATA/SEEK_HOLE; where the filesystem cannot tell, the whole range.
func dataExtents(f *os.File, size int64) ([]extent, error) {
	var out []extent
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return []extent{{0, size}}, nil // no SEEK_DATA support: treat all as data
		}
		if d >= size {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE: %w", err)
		}
		if h > size {
			h = size
		}
		out = append(out, extent{d, h - d})
		off = h
	}
	return out, nil
}

// punchZeros deallocates every all-zero 4 KiB block of f, so that the
// zero-filled FAT tables go-diskfs writes take no space.
func punchZeros(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	exts, err := dataExtents(f, st.Size())
	if err != nil {
		return err
	}
	const blk = 4096
	buf := make([]byte, 1<<20)
	zero := make([]byte, blk)
	for _, e := range exts {
		var runStart int64 = -1
		flush := func(end int64) error {
			if runStart >= 0 && end > runStart {
				err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, runStart, end-runStart)
				if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
					return fmt.Errorf("punching a hole: %w", err)
				}
			}
			runStart = -1
			return nil
		}
		for off := e.Off; off < e.Off+e.Len; {
			n := min(int64(len(buf)), e.Off+e.Len-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil && err != io.EOF {
				return err
			}
			for i := int64(0); i < n; i += blk {
				end := min(i+blk, n)
				isZero := end-i == blk && bytes.Equal(buf[i:end], zero) && (off+i)%blk == 0
				if isZero {
					if runStart < 0 {
						runStart = off + i
					}
				} else if err := flush(off + i); err != nil {
					return err
				}
			}
			off += n
		}
		if err := flush(e.Off + e.Len); err != nil {
			return err
		}
	}
	return nil
}

// copyRange copies n bytes of src starting at srcOff to dst at dstOff,
// reading only the data extents of src and writing only non-zero chunks
// (dst must read as zeros where nothing is written, e.g. a new file).
func copyRange(dst, src *os.File, srcOff, dstOff, n int64) error {
	exts, err := dataExtents(src, srcOff+n)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for _, e := range exts {
		lo, hi := max(e.Off, srcOff), min(e.Off+e.Len, srcOff+n)
		for off := lo; off < hi; {
			m := min(int64(len(buf)), hi-off)
			if _, err := src.ReadAt(buf[:m], off); err != nil && err != io.EOF {
				return fmt.Errorf("reading %s at %d: %w", src.Name(), off, err)
			}
			if !bytes.Equal(buf[:m], zero[:m]) {
				if _, err := dst.WriteAt(buf[:m], off-srcOff+dstOff); err != nil {
					return fmt.Errorf("writing %s at %d: %w", dst.Name(), off-srcOff+dstOff, err)
				}
			}
			off += m
		}
	}
	return nil
}
