// Package zeros tells all-zero data apart and supplies runs of zeros (for
// hashes, streams and files) without allocating them: the zeros of a disk
// image are most of it, and they never need to exist in memory.
package zeros

import (
	"bytes"
	"fmt"
	"io"
)

// buf is the shared zero block; as an array it lives in .bss and costs no
// memory until it is read. Nothing ever writes to it.
var buf [1 << 20]byte

// Is reports whether p holds only zero bytes.
func Is(p []byte) bool { return First(p) < 0 }

// First returns the index of the first non-zero byte of p, or -1 if there is none.
func First(p []byte) int {
	for done := 0; done < len(p); {
		n := min(len(p)-done, len(buf))
		if !bytes.Equal(p[done:done+n], buf[:n]) {
			for i, c := range p[done : done+n] {
				if c != 0 {
					return done + i
				}
			}
		}
		done += n
	}
	return -1
}

// Write writes n zero bytes to w and returns how many were written.
func Write(w io.Writer, n int64) (int64, error) {
	var done int64
	for done < n {
		k := min(n-done, int64(len(buf)))
		m, err := w.Write(buf[:k])
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// WriteAt writes n zero bytes to w at off; an error names the offset.
func WriteAt(w io.WriterAt, off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.WriteAt(buf[:k], off); err != nil {
			return fmt.Errorf("writing zeros at byte %d: %w", off, err)
		}
		off += k
		n -= k
	}
	return nil
}
