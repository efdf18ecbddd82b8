package gpt

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// GUID is a GUID as stored on disk: the first three fields little-endian
// ("mixed endian"), the last eight bytes as they are.
type GUID [16]byte

// String returns the canonical upper-case text form,
// e.g. C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
func (g GUID) String() string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(g[0:4]),
		binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]),
		g[8:10], g[10:16])
}

// IsZero reports whether every byte is zero (an unused entry's type GUID).
func (g GUID) IsZero() bool { return g == GUID{} }

// ParseGUID parses the canonical text form (case-insensitive, braces allowed).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	t := strings.Trim(strings.TrimSpace(s), "{}")
	parts := strings.Split(t, "-")
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
		return g, fmt.Errorf("gpt: malformed GUID %q", s)
	}
	b, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil {
		return g, fmt.Errorf("gpt: malformed GUID %q: %w", s, err)
	}
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(b[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(b[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(b[6:8]))
	copy(g[8:], b[8:])
	return g, nil
}

// MustParseGUID is ParseGUID for constants; it panics on malformed input.
func MustParseGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}
