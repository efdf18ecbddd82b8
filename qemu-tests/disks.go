package qemutests

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// The host-side checks below read GPT bytes directly, on purpose without
// the project's gpt package (the thing under test), and cross-check with
// sgdisk and sfdisk.

// RawCopy is one GPT header and its entry array as found on disk.
type RawCopy struct {
	LBA                     uint64 // where the header was read
	Header                  []byte // HeaderSize bytes
	MyLBA, AlternateLBA     uint64
	FirstUsable, LastUsable uint64
	EntryLBA                uint64
	Entries, EntrySize      uint32
	Array                   []byte
	HeaderCRCOK, ArrayCRCOK bool
}

// RawGPT is a disk's GPT: the primary at LBA 1, and the backup at the last
// LBA (where it belongs).
type RawGPT struct {
	SectorSize int
	Size       int64
	Primary    *RawCopy
	Backup     *RawCopy // at the last LBA; nil when there is no valid header there
}

// LastLBA is the disk's last sector.
func (g *RawGPT) LastLBA() uint64 { return uint64(g.Size/int64(g.SectorSize)) - 1 }

// ReadRawGPT reads the primary GPT at LBA 1 and the backup at the last LBA
// of the image at path.
func ReadRawGPT(path string, sectorSize int) (*RawGPT, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	g := &RawGPT{SectorSize: sectorSize, Size: st.Size()}
	if g.Primary, err = readRawCopy(f, 1, sectorSize); err != nil {
		return nil, fmt.Errorf("%s: primary GPT: %w", path, err)
	}
	if b, err := readRawCopy(f, g.LastLBA(), sectorSize); err == nil {
		g.Backup = b
	}
	return g, nil
}

// ReadRawCopyAt reads a GPT header (and its array) at lba.
func ReadRawCopyAt(path string, lba uint64, sectorSize int) (*RawCopy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readRawCopy(f, lba, sectorSize)
}

func readRawCopy(r io.ReaderAt, lba uint64, ss int) (*RawCopy, error) {
	sec := make([]byte, ss)
	if _, err := r.ReadAt(sec, int64(lba)*int64(ss)); err != nil {
		return nil, err
	}
	if string(sec[:8]) != "EFI PART" {
		return nil, fmt.Errorf("no GPT header signature at LBA %d", lba)
	}
	le := binary.LittleEndian
	hs := le.Uint32(sec[12:])
	if hs < 92 || int(hs) > ss {
		return nil, fmt.Errorf("header size %d at LBA %d", hs, lba)
	}
	c := &RawCopy{
		LBA:          lba,
		Header:       append([]byte(nil), sec[:hs]...),
		MyLBA:        le.Uint64(sec[0x18:]),
		AlternateLBA: le.Uint64(sec[0x20:]),
		FirstUsable:  le.Uint64(sec[0x28:]),
		LastUsable:   le.Uint64(sec[0x30:]),
		EntryLBA:     le.Uint64(sec[0x48:]),
		Entries:      le.Uint32(sec[0x50:]),
		EntrySize:    le.Uint32(sec[0x54:]),
	}
	h := append([]byte(nil), c.Header...)
	binary.LittleEndian.PutUint32(h[0x10:], 0)
	c.HeaderCRCOK = crc32.ChecksumIEEE(h) == le.Uint32(sec[0x10:])
	n := int64(c.Entries) * int64(c.EntrySize)
	if n <= 0 || n > 1<<20 {
		return nil, fmt.Errorf("entry array of %d x %d bytes at LBA %d", c.Entries, c.EntrySize, lba)
	}
	c.Array = make([]byte, n)
	if _, err := r.ReadAt(c.Array, int64(c.EntryLBA)*int64(ss)); err != nil {
		return nil, fmt.Errorf("entry array at LBA %d: %w", c.EntryLBA, err)
	}
	c.ArrayCRCOK = crc32.ChecksumIEEE(c.Array) == le.Uint32(sec[0x58:])
	return c, nil
}

// RawEntry is one used slot of an entry array.
type RawEntry struct {
	Slot        int // 1-based
	Type        string
	First, Last uint64
}

// UsedEntries lists the used slots of an entry array.
func (c *RawCopy) UsedEntries() []RawEntry {
	var out []RawEntry
	for i := 0; i < int(c.Entries); i++ {
		e := c.Array[i*int(c.EntrySize) : (i+1)*int(c.EntrySize)]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		out = append(out, RawEntry{
			Slot:  i + 1,
			Type:  guidString(e[:16]),
			First: binary.LittleEndian.Uint64(e[32:]),
			Last:  binary.LittleEndian.Uint64(e[40:]),
		})
	}
	return out
}

func guidString(b []byte) string {
	le := binary.LittleEndian
	return strings.ToUpper(fmt.Sprintf("%08x-%04x-%04x-%s-%s",
		le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), hex.EncodeToString(b[8:10]), hex.EncodeToString(b[10:16])))
}

// SlotsString shows the used slots compactly, e.g. "1:64-8191 5:8224-520191".
func (c *RawCopy) SlotsString() string {
	var s []string
	for _, e := range c.UsedEntries() {
		s = append(s, fmt.Sprintf("%d:%d-%d", e.Slot, e.First, e.Last))
	}
	return strings.Join(s, " ")
}

// CheckFixedGPT checks, from the bytes on disk, that the GPT of the image at
// path has exactly the original's entry array (both copies, byte for byte),
// a primary header equal to the original's in every field but the three a
// disk of another size changes (AlternateLBA, LastUsableLBA, the header
// CRC), the backup at the last LBA with its array just before it, and valid
// CRCs. It returns every problem found.
func CheckFixedGPT(path string, sectorSize int, orig *RawCopy) error {
	want := orig.Array
	g, err := ReadRawGPT(path, sectorSize)
	if err != nil {
		return err
	}
	var probs []string
	p := g.Primary
	if !p.HeaderCRCOK || !p.ArrayCRCOK {
		probs = append(probs, fmt.Sprintf("primary CRCs: header ok=%v array ok=%v", p.HeaderCRCOK, p.ArrayCRCOK))
	}
	if !bytes.Equal(p.Array, want) {
		probs = append(probs, fmt.Sprintf("primary entry array differs from the original: slots now %s", p.SlotsString()))
	}
	if f := headerDiff(orig.Header, p.Header); f != "" {
		probs = append(probs, "primary header differs from the original in "+f)
	}
	arraySectors := uint64((len(want) + sectorSize - 1) / sectorSize)
	if p.EntryLBA != 2 {
		probs = append(probs, fmt.Sprintf("primary entry array at LBA %d, want 2", p.EntryLBA))
	}
	if p.AlternateLBA != g.LastLBA() {
		probs = append(probs, fmt.Sprintf("primary AlternateLBA = %d, want the last LBA %d", p.AlternateLBA, g.LastLBA()))
	}
	if p.LastUsable != g.LastLBA()-arraySectors-1 {
		probs = append(probs, fmt.Sprintf("primary LastUsableLBA = %d, want %d for this disk", p.LastUsable, g.LastLBA()-arraySectors-1))
	}
	b := g.Backup
	switch {
	case b == nil:
		probs = append(probs, fmt.Sprintf("no backup GPT header at the last LBA %d", g.LastLBA()))
	default:
		if !b.HeaderCRCOK || !b.ArrayCRCOK {
			probs = append(probs, fmt.Sprintf("backup CRCs: header ok=%v array ok=%v", b.HeaderCRCOK, b.ArrayCRCOK))
		}
		if !bytes.Equal(b.Array, want) {
			probs = append(probs, fmt.Sprintf("backup entry array differs from the original: slots now %s", b.SlotsString()))
		}
		if b.EntryLBA != g.LastLBA()-arraySectors {
			probs = append(probs, fmt.Sprintf("backup entry array at LBA %d, want %d (just before the backup header)", b.EntryLBA, g.LastLBA()-arraySectors))
		}
		if b.MyLBA != g.LastLBA() || b.AlternateLBA != 1 {
			probs = append(probs, fmt.Sprintf("backup MyLBA/AlternateLBA = %d/%d, want %d/1", b.MyLBA, b.AlternateLBA, g.LastLBA()))
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("%s: %s", path, strings.Join(probs, "; "))
	}
	return nil
}

// headerDiff names the header fields that differ between a and b, leaving
// out those that follow from the disk size (and the header CRC over them).
func headerDiff(a, b []byte) string {
	fields := []struct {
		name     string
		off, len int
	}{
		{"signature", 0x00, 8}, {"revision", 0x08, 4}, {"header size", 0x0C, 4}, {"MyLBA", 0x18, 8},
		{"FirstUsableLBA", 0x28, 8}, {"disk GUID", 0x38, 16}, {"PartitionEntryLBA", 0x48, 8},
		{"number of entries", 0x50, 4}, {"entry size", 0x54, 4}, {"entry array CRC", 0x58, 4},
	}
	if len(a) < 92 || len(b) < 92 {
		return "length"
	}
	var d []string
	for _, f := range fields {
		if !bytes.Equal(a[f.off:f.off+f.len], b[f.off:f.off+f.len]) {
			d = append(d, f.name)
		}
	}
	if len(a) != len(b) || !bytes.Equal(a[92:], b[92:]) {
		d = append(d, "bytes after 92")
	}
	return strings.Join(d, ", ")
}

// SgdiskVerify runs `sgdisk -v` on path (an image with 512-byte sectors or
// a block device) and returns an error unless it reports no problems.
func SgdiskVerify(path string) error {
	out, err := exec.Command("sgdisk", "-v", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		return fmt.Errorf("sgdisk -v %s: %v\n%s", path, err, out)
	}
	return nil
}

// SgdiskVerify4K runs `sgdisk -v` on an image with 4096-byte sectors,
// through a read-only loop device with that sector size (needs root).
func SgdiskVerify4K(path string) error {
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", "--sector-size", "4096", path).Output()
	if err != nil {
		return fmt.Errorf("losetup --sector-size 4096 %s: %w", path, err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	return SgdiskVerify(dev)
}

// SfdiskPart is one partition as sfdisk --json lists it.
type SfdiskPart struct {
	Node  string `json:"node"`
	Start uint64 `json:"start"`
	Size  uint64 `json:"size"`
	Type  string `json:"type"`
}

// Sfdisk lists the partitions of path with `sfdisk --json`; the partition
// number is the suffix of Node.
func Sfdisk(path string) ([]SfdiskPart, error) {
	out, err := exec.Command("sfdisk", "--json", path).Output()
	if err != nil {
		return nil, fmt.Errorf("sfdisk --json %s: %w", path, err)
	}
	var v struct {
		PT struct {
			Partitions []SfdiskPart `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("sfdisk --json %s: %w", path, err)
	}
	return v.PT.Partitions, nil
}

// PartitionDigests returns a digest of every used slot's data (keyed by
// "first-last" LBA range, so it survives renumbering) of the image at path.
func PartitionDigests(path string, sectorSize int) (map[string]string, error) {
	g, err := ReadRawGPT(path, sectorSize)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	for _, e := range g.Primary.UsedEntries() {
		d, err := DigestRange(f, int64(e.First)*int64(sectorSize), int64(e.Last-e.First+1)*int64(sectorSize))
		if err != nil {
			return nil, fmt.Errorf("%s: partition %d: %w", path, e.Slot, err)
		}
		out[fmt.Sprintf("%d-%d", e.First, e.Last)] = d
	}
	return out, nil
}

// CompareDigests returns an error naming every range whose digest differs.
func CompareDigests(before, after map[string]string) error {
	var diff []string
	for r, d := range before {
		if after[r] != d {
			diff = append(diff, r)
		}
	}
	if len(after) != len(before) {
		diff = append(diff, fmt.Sprintf("(%d partitions before, %d after)", len(before), len(after)))
	}
	if len(diff) > 0 {
		return fmt.Errorf("partition data changed in LBA ranges %s", strings.Join(diff, ", "))
	}
	return nil
}

const digestChunk = 1 << 20

var zeroChunkSum = sha256.Sum256(make([]byte, digestChunk))

// DigestRange is a SHA-256 over the SHA-256 of every 1 MiB chunk of
// f[off:off+n]. Holes of a sparse file are known to be zeros and are not
// read, so a mostly empty multi-GiB image is digested in well under a
// second; the result depends only on the bytes, not on where holes are.
func DigestRange(f *os.File, off, n int64) (string, error) {
	top := sha256.New()
	buf := make([]byte, digestChunk)
	nextData := int64(-1)
	fd := int(f.Fd())
	for pos := off; pos < off+n; pos += digestChunk {
		l := min(int64(digestChunk), off+n-pos)
		if nextData < pos {
			nd, err := unix.Seek(fd, pos, unix.SEEK_DATA)
			switch {
			case errors.Is(err, unix.ENXIO):
				nd = 1 << 62 // only a hole up to the end
			case err != nil:
				nd = pos // no SEEK_DATA: read everything
			}
			nextData = nd
		}
		if nextData >= pos+l {
			if l == digestChunk {
				top.Write(zeroChunkSum[:])
			} else {
				s := sha256.Sum256(make([]byte, l))
				top.Write(s[:])
			}
			continue
		}
		if _, err := f.ReadAt(buf[:l], pos); err != nil {
			return "", err
		}
		s := sha256.Sum256(buf[:l])
		top.Write(s[:])
	}
	return hex.EncodeToString(top.Sum(nil)), nil
}

// CopySparse copies src to dst keeping holes (cp --sparse=always).
func CopySparse(src, dst string) error {
	if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp %s %s: %w: %s", src, dst, err, out)
	}
	return nil
}

// FileDigest digests a whole file (see DigestRange), for "nothing was
// touched" checks on big sparse images that cmp would read byte by byte.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	d, err := DigestRange(f, 0, st.Size())
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return fmt.Sprintf("%s/%d", d, st.Size()), nil
}

// GPTRegions returns the bytes of a disk's GPT areas: the protective MBR,
// primary header and a 128-entry array at the start, and the same amount
// at the end (where a backup GPT lives), for "untouched" checks.
func GPTRegions(path string, sectorSize int) (head, tail []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	n := int64(2*sectorSize + 128*128)
	head, tail = make([]byte, n), make([]byte, n)
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.ReadAt(tail, st.Size()-n); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return head, tail, nil
}
