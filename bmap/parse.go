package bmap

import (
	"bytes"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// xmlBmap is the XML document. Every element is a slice so that duplicates
// are seen and rejected instead of silently overwritten.
type xmlBmap struct {
	XMLName           xml.Name      `xml:"bmap"`
	Version           *string       `xml:"version,attr"`
	ImageSize         []string      `xml:"ImageSize"`
	BlockSize         []string      `xml:"BlockSize"`
	BlocksCount       []string      `xml:"BlocksCount"`
	MappedBlocksCount []string      `xml:"MappedBlocksCount"`
	ChecksumType      []string      `xml:"ChecksumType"`
	BmapFileChecksum  []string      `xml:"BmapFileChecksum"`
	BmapFileSHA1      []string      `xml:"BmapFileSHA1"`
	ImageSHA256       []string      `xml:"ImageSHA256"`
	BlockMap          []xmlBlockMap `xml:"BlockMap"`
}

type xmlBlockMap struct {
	Ranges []xmlRange `xml:"Range"`
}

type xmlRange struct {
	Chksum *string `xml:"chksum,attr"`
	SHA1   *string `xml:"sha1,attr"`
	Text   string  `xml:",chardata"`
}

// Parse parses a block map in bmaptool's XML format, versions 1.2 (no
// checksums), 1.3 (SHA-1) and 1.4 and 2.x (ChecksumType), plus the
// ImageSHA256 extension element. It is strict: the bmap file checksum is
// verified like bmaptool does (the checksum's text replaced by ASCII zeros,
// then the whole file hashed), and inconsistent or absurd numbers, unsorted
// or overlapping ranges, checksums of the wrong length, a MappedBlocksCount
// that differs from the ranges, duplicate elements and files larger than
// 64 MiB are errors.
func Parse(data []byte) (*Map, error) {
	m, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("bmap: %w", err)
	}
	return m, nil
}

// ReadFile reads and parses a block map file; errors name the path.
func ReadFile(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bmap: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("bmap file %s: %w", path, err)
	}
	m, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("bmap file %s: %w", path, err)
	}
	return m, nil
}

func parse(data []byte) (*Map, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("file is larger than %d MiB", maxFileSize>>20)
	}
	var x xmlBmap
	d := xml.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(&x); err != nil {
		return nil, fmt.Errorf("not an XML block map: %w", err)
	}
	if err := trailer(d); err != nil {
		return nil, err
	}
	if x.XMLName.Space != "" {
		return nil, fmt.Errorf("root element is in namespace %q, want none", x.XMLName.Space)
	}
	if x.Version == nil {
		return nil, errors.New("the bmap element has no version attribute")
	}
	m := &Map{Version: *x.Version}
	major, minor, err := parseVersion(m.Version)
	if err != nil {
		return nil, err
	}

	var mapped int64
	for _, f := range []struct {
		name string
		vals []string
		dst  *int64
	}{
		{"ImageSize", x.ImageSize, &m.ImageSize},
		{"BlockSize", x.BlockSize, &m.BlockSize},
		{"BlocksCount", x.BlocksCount, &m.BlocksCount},
		{"MappedBlocksCount", x.MappedBlocksCount, &mapped},
	} {
		s, err := one(f.name, f.vals)
		if err != nil {
			return nil, err
		}
		if *f.dst, err = parseNumber(s); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if m.ImageSize == 0 {
		return nil, errors.New("ImageSize is 0 (bmaptool cannot use a map of an empty image)")
	}

	// The checksum type and the element and attribute names by version, as
	// in BmapCopy._parse_bmap: 1.4 is identical to 2.0, 1.3 has SHA-1 only,
	// 1.2 has no checksums.
	var fileSumName, fileSum, attr string
	switch {
	case major == 2 || minor == 4:
		s, err := one("ChecksumType", x.ChecksumType)
		if err != nil {
			return nil, err
		}
		if hashSize(s) == 0 {
			return nil, fmt.Errorf("unsupported ChecksumType %q (want sha256, sha1, sha512 or md5)", s)
		}
		m.ChecksumType, fileSumName, attr = s, "BmapFileChecksum", "chksum"
		if fileSum, err = one(fileSumName, x.BmapFileChecksum); err != nil {
			return nil, err
		}
	case minor == 3:
		m.ChecksumType, fileSumName, attr = "sha1", "BmapFileSHA1", "sha1"
		if fileSum, err = one(fileSumName, x.BmapFileSHA1); err != nil {
			return nil, err
		}
	}
	if m.ChecksumType != "" {
		if err := verifyFileChecksum(data, m.ChecksumType, fileSumName, fileSum); err != nil {
			return nil, err
		}
	}

	if len(x.ImageSHA256) > 1 {
		return nil, fmt.Errorf("%d ImageSHA256 elements, want at most one", len(x.ImageSHA256))
	}
	if len(x.ImageSHA256) == 1 {
		if m.ImageSHA256, err = parseHex(strings.TrimSpace(x.ImageSHA256[0]), 32); err != nil {
			return nil, fmt.Errorf("ImageSHA256: %w", err)
		}
	}

	if len(x.BlockMap) != 1 {
		return nil, fmt.Errorf("%d BlockMap elements, want one", len(x.BlockMap))
	}
	xr := x.BlockMap[0].Ranges
	// Cheap early bound before the ranges are converted; validate checks it
	// again with BlocksCount known to be consistent.
	if m.BlocksCount >= 0 && int64(len(xr)) > m.BlocksCount {
		return nil, fmt.Errorf("%d ranges for %d blocks", len(xr), m.BlocksCount)
	}
	m.Ranges = make([]Range, len(xr))
	for i, r := range xr {
		rg := &m.Ranges[i]
		if rg.First, rg.Last, err = parseRange(r.Text); err != nil {
			return nil, fmt.Errorf("range %d: %w", i+1, err)
		}
		var sum *string
		switch attr {
		case "chksum":
			sum = r.Chksum
		case "sha1":
			sum = r.SHA1
		}
		if sum != nil {
			if rg.Checksum, err = parseHex(*sum, hashSize(m.ChecksumType)); err != nil {
				return nil, fmt.Errorf("range %d (%s): %s checksum: %w", i+1, strings.TrimSpace(r.Text), m.ChecksumType, err)
			}
		}
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	if got := m.MappedBlocks(); got != mapped {
		return nil, fmt.Errorf("MappedBlocksCount is %d but the ranges hold %d blocks", mapped, got)
	}
	return m, nil
}

// trailer accepts only white space, comments and processing instructions
// after the root element, as an XML parser like bmaptool's does.
func trailer(d *xml.Decoder) error {
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("after the bmap element: %w", err)
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return errors.New("text after the bmap element")
			}
		default:
			return errors.New("content after the bmap element")
		}
	}
}

// parseVersion parses "major.minor" and accepts 1.2 to 1.4 and 2.x.
func parseVersion(v string) (major, minor int, err error) {
	a, b, ok := strings.Cut(v, ".")
	if ok {
		major, err = strconv.Atoi(a)
		if err == nil && isDigits(a) && isDigits(b) {
			minor, err = strconv.Atoi(b)
		} else {
			ok = false
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("version %q is not major.minor", v)
	}
	switch {
	case major > 2:
		return 0, 0, fmt.Errorf("bmap format version %s is not supported: major version %d is newer than 2", v, major)
	case major == 2, major == 1 && minor >= 2 && minor <= 4:
		return major, minor, nil
	}
	return 0, 0, fmt.Errorf("bmap format version %s is not supported (want 1.2 to 2.x)", v)
}

// one returns the trimmed text of the only element called name.
func one(name string, vals []string) (string, error) {
	if len(vals) != 1 {
		return "", fmt.Errorf("%d %s elements, want one", len(vals), name)
	}
	return strings.TrimSpace(vals[0]), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseNumber parses a non-negative decimal number (digits only).
func parseNumber(s string) (int64, error) {
	if !isDigits(s) {
		return 0, fmt.Errorf("%q is not a non-negative decimal number", s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxImageSize {
		return 0, fmt.Errorf("%s is absurdly large", s)
	}
	return n, nil
}

// parseRange parses "A-B" or "A" with optional spaces, like bmaptool.
func parseRange(text string) (first, last int64, err error) {
	s := strings.TrimSpace(text)
	a, b, isRange := strings.Cut(s, "-")
	if first, err = parseNumber(strings.TrimSpace(a)); err != nil {
		return 0, 0, fmt.Errorf("%q: first block: %w", s, err)
	}
	last = first
	if isRange {
		if last, err = parseNumber(strings.TrimSpace(b)); err != nil {
			return 0, 0, fmt.Errorf("%q: last block: %w", s, err)
		}
	}
	return first, last, nil
}

// parseHex decodes exactly size bytes of lower-case hex; bmaptool compares
// its lower-case hexdigest with the text, so upper case would fail there.
func parseHex(s string, size int) ([]byte, error) {
	if len(s) != 2*size {
		return nil, fmt.Errorf("%q has %d hex digits, want %d", s, len(s), 2*size)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, fmt.Errorf("%q is not lower-case hex", s)
		}
	}
	return hex.DecodeString(s)
}

// verifyFileChecksum checks the bmap file checksum like
// BmapCopy._verify_bmap_checksum: the first occurrence of the checksum text
// in the raw file is replaced by ASCII zeros and the whole file is hashed.
func verifyFileChecksum(data []byte, typ, name, want string) error {
	if _, err := parseHex(want, hashSize(typ)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	i := bytes.Index(data, []byte(want))
	if i < 0 {
		return fmt.Errorf("%s: the checksum text does not appear verbatim in the file", name)
	}
	h := newHash(typ)
	h.Write(data[:i])
	h.Write(bytes.Repeat([]byte("0"), len(want)))
	h.Write(data[i+len(want):])
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("bmap file checksum mismatch: the file is corrupt or was edited (%s %s, calculated %s)", name, want, got)
	}
	return nil
}
