package gpttest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
)

// Part is one partition entry of a fixture.
type Part struct {
	Slot        int    // entry number, from 1
	Type        string // canonical GUID text (Sgdisk also takes sgdisk's codes, "EF00")
	First, Last uint64 // LBAs in the table's sector size
	Name        string
	Attrs       uint64
}

// GUID converts canonical GUID text to its on-disk mixed-endian bytes.
func GUID(t testing.TB, s string) []byte {
	t.Helper()
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		t.Fatalf("bad GUID %q", s)
	}
	var raw [16]byte
	for i := range raw {
		v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			t.Fatal(err)
		}
		raw[i] = byte(v)
	}
	// mixed endian: first three fields little-endian
	out := make([]byte, 16)
	out[0], out[1], out[2], out[3] = raw[3], raw[2], raw[1], raw[0]
	out[4], out[5] = raw[5], raw[4]
	out[6], out[7] = raw[7], raw[6]
	copy(out[8:], raw[8:])
	return out
}

// Entry encodes p as a 128-byte entry; its unique GUID is made from
// unique and the slot.
func Entry(t testing.TB, p Part, unique int) []byte {
	e := make([]byte, 128)
	copy(e[0:], GUID(t, p.Type))
	copy(e[16:], GUID(t, fmt.Sprintf("%08X-1111-4222-8333-%012X", unique, p.Slot)))
	binary.LittleEndian.PutUint64(e[32:], p.First)
	binary.LittleEndian.PutUint64(e[40:], p.Last)
	binary.LittleEndian.PutUint64(e[48:], p.Attrs)
	for i, c := range utf16.Encode([]rune(p.Name)) {
		binary.LittleEndian.PutUint16(e[56+2*i:], c)
	}
	return e
}

// Table is a GPT to be written by the independent encoder.
type Table struct {
	SectorSize  int
	DiskSectors uint64 // where the table thinks the disk ends
	NumEntries  int
	Array       []byte // NumEntries entries
	DiskGUID    string
	DiskGUIDRaw []byte // overrides DiskGUID
}

// NewTable is a table of 128 entries of 128 bytes holding parts, for a
// disk of diskBytes with ss-byte sectors.
func NewTable(t testing.TB, ss int, diskBytes int64, parts []Part) *Table {
	ft := &Table{SectorSize: ss, DiskSectors: uint64(diskBytes / int64(ss)), NumEntries: 128, DiskGUID: "0A0B0C0D-1111-4222-8333-444455556666"}
	ft.Array = make([]byte, 128*128)
	for i, p := range parts {
		copy(ft.Array[(p.Slot-1)*128:], Entry(t, p, i+1))
	}
	return ft
}

func (ft *Table) arraySectors() uint64 {
	return uint64((len(ft.Array) + ft.SectorSize - 1) / ft.SectorSize)
}

func (ft *Table) header(t testing.TB, my, alt, entryLBA uint64) []byte {
	h := make([]byte, ft.SectorSize)
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x00010000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[0x18:], my)
	binary.LittleEndian.PutUint64(h[0x20:], alt)
	binary.LittleEndian.PutUint64(h[0x28:], 2+ft.arraySectors())
	binary.LittleEndian.PutUint64(h[0x30:], ft.DiskSectors-2-ft.arraySectors())
	if ft.DiskGUIDRaw != nil {
		copy(h[0x38:], ft.DiskGUIDRaw)
	} else {
		copy(h[0x38:], GUID(t, ft.DiskGUID))
	}
	binary.LittleEndian.PutUint64(h[0x48:], entryLBA)
	binary.LittleEndian.PutUint32(h[0x50:], uint32(ft.NumEntries))
	binary.LittleEndian.PutUint32(h[0x54:], uint32(len(ft.Array)/ft.NumEntries))
	binary.LittleEndian.PutUint32(h[0x58:], crc32.ChecksumIEEE(ft.Array))
	binary.LittleEndian.PutUint32(h[0x10:], crc32.ChecksumIEEE(h[:92]))
	return h
}

// piece is bytes at an offset of a disk image.
type piece struct {
	off int64
	b   []byte
}

// pieces are the protective MBR, the primary GPT and the backup GPT (at
// DiskSectors-1), in write order.
func (ft *Table) pieces(t testing.TB) []piece {
	ss := int64(ft.SectorSize)
	last := ft.DiskSectors - 1
	mbr := make([]byte, ft.SectorSize)
	mbr[446+1], mbr[446+2] = 0, 2 // CHS start 0/0/2
	mbr[446+4] = 0xEE
	mbr[446+5], mbr[446+6], mbr[446+7] = 0xFF, 0xFF, 0xFF
	binary.LittleEndian.PutUint32(mbr[446+8:], 1)
	binary.LittleEndian.PutUint32(mbr[446+12:], uint32(min(last, 0xFFFFFFFF)))
	mbr[510], mbr[511] = 0x55, 0xAA
	bArr := last - ft.arraySectors()
	return []piece{
		{0, mbr},
		{ss, ft.header(t, 1, last, 2)},
		{2 * ss, ft.Array},
		{int64(bArr) * ss, ft.Array},
		{int64(last) * ss, ft.header(t, last, 1, bArr)},
	}
}

// Write writes the protective MBR, the primary GPT and the backup GPT
// (at DiskSectors-1) into the existing file at path.
func (ft *Table) Write(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range ft.pieces(t) {
		WriteAt(t, f, p.b, p.off)
	}
}

// WriteBackup writes only the backup GPT (array and header at
// DiskSectors-1) into the existing file at path: a CRC-valid backup
// planted anywhere on a bigger disk.
func (ft *Table) WriteBackup(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range ft.pieces(t)[3:] {
		WriteAt(t, f, p.b, p.off)
	}
}

// Image is a zeroed in-memory disk of n sectors with what Write writes;
// a backup GPT that would lie past the end (a table made for a bigger
// disk) is left out.
func (ft *Table) Image(t testing.TB, n uint64) []byte {
	d := make([]byte, n*uint64(ft.SectorSize))
	ps := ft.pieces(t)
	if ft.DiskSectors > n {
		ps = ps[:3] // MBR and primary only
	}
	for _, p := range ps {
		copy(d[p.off:], p.b)
	}
	return d
}

// RewriteCopy edits the header at headerLBA and its array in place, then
// recomputes the array CRC (0x58) and the header CRC (0x10) the way the
// spec says, as an independent writer (Windows in the incident) would.
func RewriteCopy(t testing.TB, path string, ss int, headerLBA uint64, edit func(hdr, arr []byte)) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, ss)
	if _, err := f.ReadAt(hdr, int64(headerLBA)*int64(ss)); err != nil {
		t.Fatal(err)
	}
	entryLBA := binary.LittleEndian.Uint64(hdr[0x48:])
	n := binary.LittleEndian.Uint32(hdr[0x50:]) * binary.LittleEndian.Uint32(hdr[0x54:])
	arr := make([]byte, n)
	if _, err := f.ReadAt(arr, int64(entryLBA)*int64(ss)); err != nil {
		t.Fatal(err)
	}
	edit(hdr, arr)
	binary.LittleEndian.PutUint32(hdr[0x58:], crc32.ChecksumIEEE(arr))
	hsize := binary.LittleEndian.Uint32(hdr[0x0C:])
	binary.LittleEndian.PutUint32(hdr[0x10:], 0)
	if hsize >= 92 && int(hsize) <= ss {
		binary.LittleEndian.PutUint32(hdr[0x10:], crc32.ChecksumIEEE(hdr[:hsize]))
	}
	WriteAt(t, f, arr, int64(entryLBA)*int64(ss))
	WriteAt(t, f, hdr, int64(headerLBA)*int64(ss))
}

// EditArrays edits the entry array of both GPT copies of path (the
// primary at LBA 1, the backup where the primary points) in place and
// makes every CRC valid again: the way the incident's culprit left the
// disk.
func EditArrays(t testing.TB, path string, ss int, edit func(arr []byte)) {
	t.Helper()
	hdr := ReadAt(t, path, int64(ss), ss)
	for _, lba := range []uint64{1, binary.LittleEndian.Uint64(hdr[0x20:])} {
		RewriteCopy(t, path, ss, lba, func(h, a []byte) { edit(a) })
	}
}

// used returns copies of the used entries (type GUID not zero) of arr,
// in order.
func used(arr []byte, size int) [][]byte {
	var u [][]byte
	for i := 0; i+size <= len(arr); i += size {
		if e := arr[i : i+size]; !bytes.Equal(e[:16], make([]byte, 16)) {
			u = append(u, bytes.Clone(e))
		}
	}
	return u
}

// Compact closes every gap in an entry array of size-byte entries,
// keeping the order: what the incident's writer did.
func Compact(arr []byte, size int) {
	u := used(arr, size)
	clear(arr)
	for i, e := range u {
		copy(arr[i*size:], e)
	}
}

// Compact128 is Compact for 128-byte entries.
func Compact128(arr []byte) { Compact(arr, 128) }

// Sort rewrites an array of 128-byte entries as a list sorted by first
// LBA from slot 1 on, as most partition editors do when asked to "sort".
func Sort(arr []byte) {
	u := used(arr, 128)
	sort.SliceStable(u, func(i, j int) bool {
		return binary.LittleEndian.Uint64(u[i][32:]) < binary.LittleEndian.Uint64(u[j][32:])
	})
	clear(arr)
	for i, e := range u {
		copy(arr[i*128:], e)
	}
}

// Raw is one GPT copy as the independent decoder sees it.
type Raw struct {
	Hdr, Arr                []byte
	My, Alt, Entry          uint64 // header's own, alternate and array LBAs
	FirstUsable, LastUsable uint64
	HdrOK, ArrOK            bool // CRCs right
}

// Decode reads the copy whose header is at lba, checking both CRCs. A
// sector without the "EFI PART" signature gives a Raw with only Hdr set.
func Decode(t testing.TB, path string, ss int, lba uint64) Raw {
	t.Helper()
	var c Raw
	c.Hdr = ReadAt(t, path, int64(lba)*int64(ss), ss)
	if string(c.Hdr[:8]) != "EFI PART" {
		return c
	}
	h := bytes.Clone(c.Hdr[:92])
	want := binary.LittleEndian.Uint32(h[0x10:])
	binary.LittleEndian.PutUint32(h[0x10:], 0)
	c.HdrOK = crc32.ChecksumIEEE(h) == want
	c.My = binary.LittleEndian.Uint64(c.Hdr[0x18:])
	c.Alt = binary.LittleEndian.Uint64(c.Hdr[0x20:])
	c.FirstUsable = binary.LittleEndian.Uint64(c.Hdr[0x28:])
	c.LastUsable = binary.LittleEndian.Uint64(c.Hdr[0x30:])
	c.Entry = binary.LittleEndian.Uint64(c.Hdr[0x48:])
	n := binary.LittleEndian.Uint32(c.Hdr[0x50:]) * binary.LittleEndian.Uint32(c.Hdr[0x54:])
	c.Arr = ReadAt(t, path, int64(c.Entry)*int64(ss), int(n))
	c.ArrOK = crc32.ChecksumIEEE(c.Arr) == binary.LittleEndian.Uint32(c.Hdr[0x58:])
	return c
}

// Incident reproduces what happened to the ESXi 5.0 disk: the image at
// src (512-byte sectors, 128x128 array at LBA 2) is raw-copied onto a new
// image of newSize bytes in dir, then an independent writer re-reads the
// table into a list and writes it back for the new disk size: array
// compacted, backup at the new end, AlternateLBA and LastUsableLBA
// updated, every CRC valid. The partitions' data are not touched.
func Incident(t testing.TB, src, dir string, srcSize, newSize int64) string {
	t.Helper()
	dst := Sparse(t, dir, "incident.img", newSize)
	CopyRegions(t, src, dst, Regions(srcSize, 512)...)
	hdr := ReadAt(t, src, 512, 512)
	arr := ReadAt(t, src, 1024, 128*128)
	Compact(arr, 128)
	ft := &Table{SectorSize: 512, DiskSectors: uint64(newSize / 512), NumEntries: 128, Array: arr, DiskGUIDRaw: hdr[0x38:0x48]}
	ft.Write(t, dst)
	return dst
}
