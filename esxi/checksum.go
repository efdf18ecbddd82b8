package esxi

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// checksumChunk is the granularity of PartitionChecksums.
const checksumChunk = 64 << 10

// PartitionChecksums returns, for every partition of parts (keyed by
// Part.Slot, the layout's entry number), a SHA-256 digest of the bytes the
// partition covers in the image at path: First..Last in 512-byte units,
// independent of where the GPT now says the partition is. Use it to prove
// that repairing or damaging a table left the data alone:
//
//	parts, _ := esxi.Layout(v, originalSize, sectorSize)
//	before, _ := esxi.PartitionChecksums(img, parts)
//
// The digest is SHA-256 over the partition length followed by (chunk index,
// chunk bytes) for every 64 KiB chunk that is not all zero, so equal
// digests mean equal bytes, holes are never read, and an 8 GiB sparse image
// takes milliseconds. A partition reaching past the end of the file is an
// error.
func PartitionChecksums(path string, parts []Part) (map[int]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("esxi: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("esxi: %w", err)
	}
	exts, err := dataExtents(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("esxi: %s: %w", path, err)
	}
	out := make(map[int]string)
	buf := make([]byte, checksumChunk)
	zero := make([]byte, checksumChunk)
	for _, p := range parts {
		start, size := int64(p.First)*512, p.Size()
		if start+size > st.Size() {
			return nil, fmt.Errorf("esxi: partition %d (bytes %d-%d) reaches past the end of %s (%d bytes)", p.Slot, start, start+size, path, st.Size())
		}
		h := sha256.New()
		binary.Write(h, binary.LittleEndian, size)
		var last int64 = -1 // last chunk hashed, to avoid hashing one twice
		for _, e := range exts {
			lo, hi := max(e.Off, start), min(e.Off+e.Len, start+size)
			if lo >= hi {
				continue
			}
			for c := (lo - start) / checksumChunk; c*checksumChunk+start < hi; c++ {
				if c <= last {
					continue
				}
				last = c
				n := min(int64(checksumChunk), size-c*checksumChunk)
				if _, err := f.ReadAt(buf[:n], start+c*checksumChunk); err != nil && err != io.EOF {
					return nil, fmt.Errorf("esxi: reading %s: %w", path, err)
				}
				if bytes.Equal(buf[:n], zero[:n]) {
					continue
				}
				binary.Write(h, binary.LittleEndian, c)
				h.Write(buf[:n])
			}
		}
		out[p.Slot] = hex.EncodeToString(h.Sum(nil))
	}
	return out, nil
}
