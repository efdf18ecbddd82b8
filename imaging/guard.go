package imaging

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
)

// A restore must never leave a disk that looks valid but did not get the
// whole, checked image: before the first data byte goes out, every
// partition table header on the target (protective MBR, primary and backup
// GPT headers, at either sector size for a file) is saved to an undo file
// in package gpt's format, with the entry arrays next to them, and then
// zeroed and flushed. The regions those tables occupy and the image's own
// headers are held back (see held) and written only at the end, after
// the checksum matched, so the undo file stays exact until then: `gptfix
// -undo FILE -yes DST` puts the old table back byte for byte.

// tableSector is one sector of a partition table on the target.
type tableSector struct {
	region string
	off    int64
	old    []byte
	new    []byte // what the guard writes (zeros for a header, old for an array)
}

// guard is the saved and invalidated table of a restore target.
type guard struct {
	undoPath string
	sectors  []tableSector
}

// scanTables finds the partition table sectors on a target of size bytes:
// the MBR when it has the 0x55AA signature, every sector holding a GPT
// header signature at LBA 1, at the last LBA or where a header's
// AlternateLBA points, and the entry arrays those headers name. unit is
// the size the sectors are cut into (the undo file's sector size);
// sizes are the sector sizes to look at.
func scanTables(r io.ReaderAt, size int64, unit int, sizes []int) ([]tableSector, error) {
	byOff := map[int64]*tableSector{}
	add := func(region string, off int64, n int, invalidate bool) error {
		if off < 0 || off+int64(n) > size {
			return nil
		}
		for o := off; o < off+int64(n); o += int64(unit) {
			if s, ok := byOff[o]; ok {
				if invalidate {
					s.region, s.new = region, make([]byte, unit)
				}
				continue
			}
			b := make([]byte, unit)
			if _, err := r.ReadAt(b, o); err != nil {
				return fmt.Errorf("reading the target's %s at byte %d: %w", region, o, err)
			}
			s := &tableSector{region: region, off: o, old: b, new: b}
			if invalidate {
				s.new = make([]byte, unit)
			}
			byOff[o] = s
		}
		return nil
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, fmt.Errorf("reading the target's MBR: %w", err)
	}
	if mbr[510] == 0x55 && mbr[511] == 0xAA {
		if err := add("protective MBR", 0, unit, true); err != nil {
			return nil, err
		}
	}
	for _, ss := range sizes {
		if size < 3*int64(ss) {
			continue
		}
		last := uint64(size/int64(ss)) - 1
		todo := []uint64{1, last}
		seen := map[uint64]bool{}
		for len(todo) > 0 {
			lba := todo[0]
			todo = todo[1:]
			if seen[lba] || lba == 0 || lba > last {
				continue
			}
			seen[lba] = true
			sec := make([]byte, ss)
			if _, err := r.ReadAt(sec, int64(lba)*int64(ss)); err != nil {
				return nil, fmt.Errorf("reading the target's LBA %d: %w", lba, err)
			}
			if string(sec[:8]) != gpt.Signature {
				continue
			}
			h := gpt.ParseHeader(sec)
			which := "backup"
			if lba == 1 {
				which = "primary"
			}
			// The array first: a header sector inside another copy's
			// array region must still be invalidated.
			arr := int64(h.NumEntries) * int64(h.EntrySize)
			if arr > 0 && arr <= gpt.MaxArrayBytes && h.EntryLBA > 0 && h.EntryLBA <= last {
				n := (arr + int64(unit) - 1) / int64(unit) * int64(unit)
				if err := add(which+" entry array", int64(h.EntryLBA)*int64(ss), int(n), false); err != nil {
					return nil, err
				}
			}
			for o := 0; o < ss; o += unit {
				if err := add(which+" header", int64(lba)*int64(ss)+int64(o), unit, true); err != nil {
					return nil, err
				}
			}
			todo = append(todo, h.AlternateLBA)
		}
	}
	out := make([]tableSector, 0, len(byOff))
	for _, s := range byOff {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b tableSector) int { return int(a.off - b.off) })
	return out, nil
}

// guardTarget saves the target's partition tables to a new undo file at
// undoPath and invalidates them (headers and MBR zeroed, flushed). It
// returns nil when the target holds no table (nothing to save).
func guardTarget(f *os.File, name string, size int64, unit int, sizes []int, undoPath string) (*guard, error) {
	secs, err := scanTables(f, size, unit, sizes)
	if err != nil {
		return nil, err
	}
	changed := false
	for _, s := range secs {
		if !bytes.Equal(s.old, s.new) {
			changed = true
		}
	}
	if !changed {
		return nil, nil
	}
	// Regions named so that gpt's undo puts the primary side back first:
	// "backup ..." ones are restored last.
	u := &gpt.Undo{Created: time.Now().UTC(), Device: name, DiskSize: size, SectorSize: unit}
	for _, s := range secs {
		sum := sha256.Sum256(s.old)
		u.Records = append(u.Records, gpt.UndoRecord{Region: s.region, LBA: uint64(s.off / int64(unit)), Offset: s.off,
			Old: hex.EncodeToString(s.old), New: hex.EncodeToString(s.new), OldSHA256: hex.EncodeToString(sum[:])})
	}
	data, err := gpt.MarshalUndo(u)
	if err != nil {
		return nil, fmt.Errorf("encoding the undo file: %w", err)
	}
	if err := gpt.WriteNewFile(undoPath, data); err != nil {
		return nil, fmt.Errorf("saving the target's partition table to %s (nothing was written to %s): %w", undoPath, name, err)
	}
	for _, s := range secs {
		if bytes.Equal(s.old, s.new) {
			continue
		}
		if _, err := f.WriteAt(s.new, s.off); err != nil {
			return nil, fmt.Errorf("invalidating the %s of %s at byte %d: %w (gptfix -undo %s -yes %s puts it back)", s.region, name, s.off, unwrapPath(err), undoPath, name)
		}
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("flushing %s: %w (gptfix -undo %s -yes %s puts its partition table back)", name, err, undoPath, name)
	}
	return &guard{undoPath: undoPath, sectors: secs}, nil
}

// ranges returns the byte ranges of the saved table sectors, merged.
func (g *guard) ranges() [][2]int64 {
	var out [][2]int64
	for _, s := range g.sectors {
		end := s.off + int64(len(s.old))
		if k := len(out); k > 0 && out[k-1][1] >= s.off {
			out[k-1][1] = max(out[k-1][1], end)
			continue
		}
		out = append(out, [2]int64{s.off, end})
	}
	return out
}

// syncDir fsyncs a directory, so a new or renamed entry in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// undoName returns a fresh undo file name for target in dir (os.TempDir()
// when empty): kind, the target, the time to the microsecond and the pid,
// so two restores never pick the same name.
func undoName(dir, kind, target string) string {
	if dir == "" {
		dir = os.TempDir()
	}
	return filepath.Join(dir, fmt.Sprintf("imgcopy-undo-%s-%s-%s-%d.json", kind,
		strings.ReplaceAll(strings.Trim(target, "/"), "/", "_"), time.Now().UTC().Format("20060102T150405.000000Z"), os.Getpid()))
}

// heldRange is a byte range of the image written only at the end.
type heldRange struct {
	off int64
	buf []byte // the image's bytes there (zeros until data arrives)
}

// held passes the stream on to a sink except the bytes in its ranges
// (the image's MBR and primary GPT, its backup GPT header, and wherever
// the target's own tables are), which it keeps and writes with flush,
// after the image was checked. Ranges are few and sorted; the cost is a
// few comparisons per chunk, nothing per byte.
type held struct {
	sink   *rawSink
	ranges []heldRange
}

// newHeld makes a held for the given ranges (merged and sorted).
func newHeld(sink *rawSink, rs [][2]int64) *held {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b [2]int64) int { return int(a[0] - b[0]) })
	var merged [][2]int64
	for _, r := range rs {
		if r[1] <= r[0] || r[0] < 0 {
			continue
		}
		if k := len(merged); k > 0 && merged[k-1][1] >= r[0] {
			merged[k-1][1] = max(merged[k-1][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	h := &held{sink: sink}
	for _, r := range merged {
		h.ranges = append(h.ranges, heldRange{off: r[0], buf: make([]byte, r[1]-r[0])})
	}
	return h
}

func (h *held) setKeep(keep func() func()) { h.sink.setKeep(keep) }

func (h *held) data(b []byte, off int64) error {
	end := off + int64(len(b))
	pos := off
	for i := range h.ranges {
		r := &h.ranges[i]
		rend := r.off + int64(len(r.buf))
		if rend <= pos || r.off >= end {
			continue
		}
		if r.off > pos {
			if err := h.sink.data(b[pos-off:r.off-off], pos); err != nil {
				return err
			}
			pos = r.off
		}
		e := min(rend, end)
		copy(r.buf[pos-r.off:], b[pos-off:e-off])
		pos = e
	}
	if pos < end {
		return h.sink.data(b[pos-off:], pos)
	}
	return nil
}

func (h *held) zero(off, n int64) error {
	end := off + n
	pos := off
	for _, r := range h.ranges {
		rend := r.off + int64(len(r.buf))
		if rend <= pos || r.off >= end {
			continue
		}
		if r.off > pos {
			if err := h.sink.zero(pos, r.off-pos); err != nil {
				return err
			}
		}
		pos = min(rend, end) // the buffer already holds zeros
	}
	if pos < end {
		return h.sink.zero(pos, end-pos)
	}
	return nil
}

// flush writes the held bytes the image (of total bytes) covered: the
// ranges past the head first, the head (MBR and primary GPT) last.
func (h *held) flush(total int64) error {
	for i := len(h.ranges) - 1; i >= 0; i-- {
		r := h.ranges[i]
		n := min(int64(len(r.buf)), total-r.off)
		if n <= 0 {
			continue
		}
		if err := h.sink.data(r.buf[:n], r.off); err != nil {
			return err
		}
	}
	return nil
}

// imageBackupHeader returns the byte range of the image's backup GPT
// header as its primary names it (ok false when there is no GPT).
func imageBackupHeader(head []byte, ss int) ([2]int64, bool) {
	if len(head) < 2*ss || string(head[ss:ss+8]) != gpt.Signature {
		return [2]int64{}, false
	}
	alt := binary.LittleEndian.Uint64(head[ss+0x20:])
	if alt < 2 || alt > 1<<50 {
		return [2]int64{}, false
	}
	off := int64(alt) * int64(ss)
	return [2]int64{off, off + int64(ss)}, true
}
