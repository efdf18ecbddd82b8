package bmap

import (
	"bytes"
	"fmt"
	"hash"

	"github.com/esxi-rescue/rescue/internal/zeros"
)

// Checker verifies an image streamed in order against a Map: each mapped
// range's checksum, and that every byte outside the ranges is zero. When a
// Checker accepts an image of a Complete map, the image's SHA-256 is the
// map's ImageSHA256.
//
// The first error is sticky: every later call returns it.
type Checker struct {
	m    *Map
	err  error
	done bool
	pos  int64

	ri         int       // the range pos is in or before; len(m.Ranges) after the last
	rOff, rEnd int64     // its bytes
	h          hash.Hash // nil when the map has no checksum type
	sum        []byte    // scratch for h.Sum
	checked    int
}

// NewChecker returns a Checker for m. An invalid map makes every method
// return an error.
func NewChecker(m *Map) *Checker {
	c := &Checker{m: m}
	if err := m.validate(); err != nil {
		c.err = fmt.Errorf("bmap checker: invalid map: %w", err)
		return c
	}
	c.h = m.NewHash()
	c.setRange(0)
	return c
}

func (c *Checker) setRange(i int) {
	c.ri = i
	if i < len(c.m.Ranges) {
		c.rOff, c.rEnd = c.m.ByteRange(c.m.Ranges[i])
	} else {
		c.rOff, c.rEnd = c.m.ImageSize, c.m.ImageSize
	}
	if c.h != nil {
		c.h.Reset()
	}
}

// hashing reports whether the current range's bytes go into the hash.
func (c *Checker) hashing() bool {
	return c.h != nil && c.m.Ranges[c.ri].Checksum != nil
}

// advance checks that n bytes at off may come next.
func (c *Checker) advance(off, n int64) error {
	switch {
	case c.err != nil:
		return c.err
	case c.done:
		return fmt.Errorf("bmap checker: %w", errDone)
	case off != c.pos:
		return fmt.Errorf("bmap checker: bytes at offset %d, want the next offset %d (the image must be streamed in order)", off, c.pos)
	case n < 0:
		return fmt.Errorf("bmap checker: negative length %d at offset %d", n, off)
	case n > c.m.ImageSize-c.pos:
		c.err = fmt.Errorf("bmap checker: the image is larger than the map's image size of %d bytes (bytes %d-%d)", c.m.ImageSize, off, off+n)
		return c.err
	}
	return nil
}

// endRange checks the checksum of the range that ends at pos and moves on.
func (c *Checker) endRange() error {
	r := c.m.Ranges[c.ri]
	if c.hashing() {
		c.sum = c.h.Sum(c.sum[:0])
		if !bytes.Equal(c.sum, r.Checksum) {
			c.err = &MismatchError{Off: c.rOff, End: c.rEnd, First: r.First, Last: r.Last, Reason: "checksum differs"}
			return c.err
		}
	}
	c.checked++
	c.setRange(c.ri + 1)
	return nil
}

// Data checks the image bytes p at offset off, which must equal the number of
// bytes seen so far. It returns a *MismatchError as soon as a range ends with
// a wrong checksum or an unmapped byte is non-zero.
func (c *Checker) Data(p []byte, off int64) error {
	if err := c.advance(off, int64(len(p))); err != nil {
		return err
	}
	for len(p) > 0 {
		if c.pos < c.rOff {
			// Before the next range (after the last one, rOff is the
			// image size): must be zeros.
			seg := p[:min(int64(len(p)), c.rOff-c.pos)]
			if i := zeros.First(seg); i >= 0 {
				at := c.pos + int64(i)
				c.err = &MismatchError{Off: at, End: at + 1, First: -1, Last: -1, Reason: "non-zero data outside the mapped ranges"}
				return c.err
			}
			c.pos += int64(len(seg))
			p = p[len(seg):]
			continue
		}
		seg := p[:min(int64(len(p)), c.rEnd-c.pos)]
		if c.hashing() {
			c.h.Write(seg)
		}
		c.pos += int64(len(seg))
		p = p[len(seg):]
		if c.pos == c.rEnd {
			if err := c.endRange(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Zero checks n known zero bytes at offset off (a hole), with the same
// ordering rule as Data. Zeros inside a range are fed into its hash from a
// shared zero buffer; zeros outside the ranges cost nothing.
func (c *Checker) Zero(off, n int64) error {
	if err := c.advance(off, n); err != nil {
		return err
	}
	for n > 0 {
		if c.pos < c.rOff {
			k := min(n, c.rOff-c.pos)
			c.pos += k
			n -= k
			continue
		}
		k := min(n, c.rEnd-c.pos)
		if c.hashing() {
			zeros.Write(c.h, k)
		}
		c.pos += k
		n -= k
		if c.pos == c.rEnd {
			if err := c.endRange(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Finish ends the check of an image of total bytes: total must equal the
// map's ImageSize, all of it must have been streamed, and so every range
// must have been checked.
func (c *Checker) Finish(total int64) error {
	if err := c.advance(c.pos, 0); err != nil {
		return err
	}
	c.done = true
	m := c.m
	switch {
	case total != m.ImageSize:
		return fmt.Errorf("bmap checker: the image is %d bytes, its map says %d bytes", total, m.ImageSize)
	case c.ri < len(m.Ranges):
		r := m.Ranges[c.ri]
		return fmt.Errorf("bmap checker: the image ended at byte %d, before the end of blocks %d-%d (bytes %d-%d); %d of %d ranges checked",
			c.pos, r.First, r.Last, c.rOff, c.rEnd, c.checked, len(m.Ranges))
	case c.pos != total:
		return fmt.Errorf("bmap checker: the image ended at byte %d, its map says %d bytes", c.pos, total)
	}
	return nil
}

// RangesChecked returns the number of ranges streamed completely so far (a
// range with a checksum counts only when the checksum matched).
func (c *Checker) RangesChecked() int {
	return c.checked
}
