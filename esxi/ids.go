package esxi

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// ids derives every identifier of an image (disk GUID, partition GUIDs,
// boot bank UUIDs, FAT volume IDs, filler bytes) from one seed, so the same
// options always give the same bytes.
type ids struct{ seed int64 }

// bytes returns n deterministic bytes for the purpose named by what.
func (s ids) bytes(what string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var ctr uint64
	for len(out) < n {
		h := sha256.New()
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:8], uint64(s.seed))
		binary.LittleEndian.PutUint64(b[8:], ctr)
		h.Write(b[:])
		h.Write([]byte(what))
		out = h.Sum(out)
		ctr++
	}
	return out[:n]
}

// guid returns a random-looking (version 4, RFC 4122 variant) GUID in the
// canonical upper-case text form.
func (s ids) guid(what string) string {
	b := s.bytes("guid:"+what, 16)
	b[6] = b[6]&0x0F | 0x40
	b[8] = b[8]&0x3F | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}

// u32 returns a deterministic 32-bit value, e.g. a FAT volume ID.
func (s ids) u32(what string) uint32 {
	return binary.LittleEndian.Uint32(s.bytes("u32:"+what, 4))
}
