package gpt_test

// Test fixtures built without the package under test: images partitioned
// by sgdisk, and an independent hand-written GPT encoder (raw offsets,
// encoding/binary and hash/crc32 only) for what sgdisk cannot make
// (4096-byte sectors, compacted arrays, junk in unused slots, damage).

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"

	"github.com/esxi-rescue/rescue/esxi"
)

type fxPart struct {
	Slot        int
	Type        string // canonical GUID text
	First, Last uint64
	Name        string
	Attrs       uint64
}

func fromLayout(parts []esxi.Part, sectorSize int) []fxPart {
	var out []fxPart
	for _, p := range parts {
		f, l := p.LBAs(sectorSize)
		out = append(out, fxPart{Slot: p.Slot, Type: p.Type, First: f, Last: l, Attrs: p.Attrs})
	}
	return out
}

func esxiLayout(t testing.TB, v string, size int64, ss int) []fxPart {
	t.Helper()
	parts, err := esxi.Layout(esxi.Version(v), size, ss)
	if err != nil {
		t.Fatal(err)
	}
	return fromLayout(parts, ss)
}

func need(t testing.TB, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s is needed (build.sh APT_PACKAGES installs it): %v", tool, err)
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sparse creates an empty sparse file of size bytes.
func sparse(t testing.TB, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// sgdiskImage makes a sparse image of size bytes partitioned by sgdisk
// with 512-byte sectors, every partition at its slot.
// sgdisk sleeps about a second after writing, so every distinct image is
// made once per test run; its GPT regions are kept in memory and written
// into a fresh sparse file for each caller.
func sgdiskImage(t testing.TB, dir string, size int64, parts []fxPart) string {
	t.Helper()
	key := fmt.Sprint(size, parts)
	sgCache.Lock()
	regions, ok := sgCache.m[key]
	if !ok {
		src := makeSgdiskImage(t, t.TempDir(), size, parts)
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range gptRegions(size, 512) {
			b := make([]byte, r[1])
			if _, err := f.ReadAt(b, r[0]); err != nil {
				t.Fatal(err)
			}
			regions = append(regions, region{r[0], b})
		}
		f.Close()
		sgCache.m[key] = regions
	}
	sgCache.Unlock()
	p := sparse(t, dir, fmt.Sprintf("sg%d.img", size), size)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range regions {
		writeAt(t, f, r.b, r.off)
	}
	return p
}

type region struct {
	off int64
	b   []byte
}

var sgCache = struct {
	sync.Mutex
	m map[string][]region
}{m: map[string][]region{}}

func makeSgdiskImage(t testing.TB, dir string, size int64, parts []fxPart) string {
	t.Helper()
	need(t, "sgdisk")
	p := sparse(t, dir, "sgdisk.img", size)
	args := []string{"-a", "1"}
	for _, x := range parts {
		args = append(args, "-n", fmt.Sprintf("%d:%d:%d", x.Slot, x.First, x.Last), "-t", fmt.Sprintf("%d:%s", x.Slot, x.Type))
		if x.Name != "" {
			args = append(args, "-c", fmt.Sprintf("%d:%s", x.Slot, x.Name))
		}
		for b := 0; b < 64; b++ {
			if x.Attrs&(1<<b) != 0 {
				args = append(args, "-A", fmt.Sprintf("%d:set:%d", x.Slot, b))
			}
		}
	}
	run(t, "sgdisk", append(args, p)...)
	return p
}

// --- independent encoder ---

func guidBytes(t testing.TB, s string) []byte {
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

func fxEntry(t testing.TB, p fxPart, unique int) []byte {
	e := make([]byte, 128)
	copy(e[0:], guidBytes(t, p.Type))
	copy(e[16:], guidBytes(t, fmt.Sprintf("%08X-1111-4222-8333-%012X", unique, p.Slot)))
	binary.LittleEndian.PutUint64(e[32:], p.First)
	binary.LittleEndian.PutUint64(e[40:], p.Last)
	binary.LittleEndian.PutUint64(e[48:], p.Attrs)
	for i, c := range utf16.Encode([]rune(p.Name)) {
		binary.LittleEndian.PutUint16(e[56+2*i:], c)
	}
	return e
}

// fxTable is a GPT to be written by the independent encoder.
type fxTable struct {
	SectorSize  int
	DiskSectors uint64 // where the table thinks the disk ends
	NumEntries  int
	Array       []byte // NumEntries*128
	DiskGUID    string
	DiskGUIDRaw []byte // overrides DiskGUID
}

func newFxTable(t testing.TB, ss int, diskBytes int64, parts []fxPart) *fxTable {
	ft := &fxTable{SectorSize: ss, DiskSectors: uint64(diskBytes / int64(ss)), NumEntries: 128, DiskGUID: "0A0B0C0D-1111-4222-8333-444455556666"}
	ft.Array = make([]byte, 128*128)
	for i, p := range parts {
		copy(ft.Array[(p.Slot-1)*128:], fxEntry(t, p, i+1))
	}
	return ft
}

func (ft *fxTable) arraySectors() uint64 {
	return uint64((len(ft.Array) + ft.SectorSize - 1) / ft.SectorSize)
}

func (ft *fxTable) header(t testing.TB, my, alt, entryLBA uint64) []byte {
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
		copy(h[0x38:], guidBytes(t, ft.DiskGUID))
	}
	binary.LittleEndian.PutUint64(h[0x48:], entryLBA)
	binary.LittleEndian.PutUint32(h[0x50:], uint32(ft.NumEntries))
	binary.LittleEndian.PutUint32(h[0x54:], uint32(len(ft.Array)/ft.NumEntries))
	binary.LittleEndian.PutUint32(h[0x58:], crc32.ChecksumIEEE(ft.Array))
	binary.LittleEndian.PutUint32(h[0x10:], crc32.ChecksumIEEE(h[:92]))
	return h
}

// write writes MBR, primary and backup into the file at path.
func (ft *fxTable) write(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ss := int64(ft.SectorSize)
	last := ft.DiskSectors - 1
	mbr := make([]byte, ft.SectorSize)
	mbr[446+1], mbr[446+2] = 0, 2 // CHS start 0/0/2
	mbr[446+4] = 0xEE
	mbr[446+5], mbr[446+6], mbr[446+7] = 0xFF, 0xFF, 0xFF
	binary.LittleEndian.PutUint32(mbr[446+8:], 1)
	sz := last
	if sz > 0xFFFFFFFF {
		sz = 0xFFFFFFFF
	}
	binary.LittleEndian.PutUint32(mbr[446+12:], uint32(sz))
	mbr[510], mbr[511] = 0x55, 0xAA
	writeAt(t, f, mbr, 0)
	writeAt(t, f, ft.header(t, 1, last, 2), ss)
	writeAt(t, f, ft.Array, 2*ss)
	bArr := last - ft.arraySectors()
	writeAt(t, f, ft.Array, int64(bArr)*ss)
	writeAt(t, f, ft.header(t, last, 1, bArr), int64(last)*ss)
}

func writeAt(t testing.TB, f *os.File, b []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// rewriteCopy edits the header at headerLBA and its array in place, then
// recomputes the array CRC (0x58) and the header CRC (0x10) the way the
// spec says, as an independent writer (Windows in the incident) would.
func rewriteCopy(t testing.TB, path string, ss int, headerLBA uint64, edit func(hdr, arr []byte)) {
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
	writeAt(t, f, arr, int64(entryLBA)*int64(ss))
	writeAt(t, f, hdr, int64(headerLBA)*int64(ss))
}

// compact closes every gap in an entry array, keeping the order: what the
// incident's writer did.
func compact(arr []byte, size int) {
	var used [][]byte
	for i := 0; i+size <= len(arr); i += size {
		e := arr[i : i+size]
		zero := true
		for _, b := range e[:16] {
			if b != 0 {
				zero = false
			}
		}
		if !zero {
			used = append(used, append([]byte(nil), e...))
		}
	}
	clear(arr)
	for i, e := range used {
		copy(arr[i*size:], e)
	}
}

// copyRegions copies byte ranges [off, off+n) of src to the same offsets
// in dst (both exist).
func copyRegions(t testing.TB, src, dst string, regions ...[2]int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, r := range regions {
		b := make([]byte, r[1])
		if _, err := in.ReadAt(b, r[0]); err != nil {
			t.Fatal(err)
		}
		writeAt(t, out, b, r[0])
	}
}

// gptRegions are the byte ranges holding the GPT of an image of size
// bytes with 512-byte sectors and a 128x128 array: LBA 0-33 and the last
// 33 sectors.
func gptRegions(size int64, ss int) [][2]int64 {
	arr := int64(128 * 128)
	h := int64(ss)*2 + arr
	t := arr + int64(ss)
	return [][2]int64{{0, h}, {size - t, t}}
}

// --- independent readers ---

type sgPart struct {
	Num         int
	First, Last uint64
	Code        string
	Name        string
}

// sgdiskList parses `sgdisk -p`.
func sgdiskList(t testing.TB, path string) []sgPart {
	t.Helper()
	out := run(t, "sgdisk", "-p", path)
	var ps []sgPart
	in := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Number") {
			in = true
			continue
		}
		f := strings.Fields(l)
		if !in || len(f) < 6 {
			continue
		}
		var p sgPart
		p.Num, _ = strconv.Atoi(f[0])
		p.First, _ = strconv.ParseUint(f[1], 10, 64)
		p.Last, _ = strconv.ParseUint(f[2], 10, 64)
		p.Code = f[5]
		if len(f) > 6 {
			p.Name = strings.Join(f[6:], " ")
		}
		ps = append(ps, p)
	}
	return ps
}

// sgdiskInfo parses `sgdisk -i N`.
func sgdiskInfo(t testing.TB, path string, n int) map[string]string {
	t.Helper()
	out := run(t, "sgdisk", "-i", strconv.Itoa(n), path)
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

type sfdiskDump struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		FirstLBA   uint64 `json:"firstlba"`
		LastLBA    uint64 `json:"lastlba"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start uint64 `json:"start"`
			Size  uint64 `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdiskJSON(t testing.TB, path string) sfdiskDump {
	t.Helper()
	need(t, "sfdisk")
	out, err := exec.Command("sfdisk", "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", path, err)
	}
	var d sfdiskDump
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("sfdisk output: %v\n%s", err, out)
	}
	return d
}

// sfdiskSlot returns the entry number from an sfdisk node name ("x.img12").
func sfdiskSlot(node string) int {
	i := len(node)
	for i > 0 && node[i-1] >= '0' && node[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(node[i:])
	return n
}

type fdiskPart struct {
	Slot        int
	First, Last uint64
	Type, UUID  string
}

// fdiskList parses `fdisk -b SS -l` of an image (fdisk, unlike sfdisk,
// takes a sector size for files).
func fdiskList(t testing.TB, path string, ss int) []fdiskPart {
	t.Helper()
	need(t, "fdisk")
	out, err := exec.Command("fdisk", "-b", strconv.Itoa(ss), "-l", "-o", "Device,Start,End,Type-UUID,UUID", path).Output()
	if err != nil {
		t.Fatalf("fdisk -l %s: %v\n%s", path, err, out)
	}
	var ps []fdiskPart
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 5 || !strings.HasPrefix(f[0], path) {
			continue
		}
		var p fdiskPart
		p.Slot = sfdiskSlot(f[0])
		p.First, _ = strconv.ParseUint(f[1], 10, 64)
		p.Last, _ = strconv.ParseUint(f[2], 10, 64)
		p.Type, p.UUID = f[3], f[4]
		ps = append(ps, p)
	}
	return ps
}

// readRaw reads n bytes at off of path.
func readRaw(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// incident reproduces what happened to the ESXi 5.0 disk: the image at src
// (512-byte sectors, 128x128 array at LBA 2) is raw-copied onto a new
// image of newSize bytes, then an independent writer re-reads the table
// into a list and writes it back for the new disk size: array compacted,
// backup at the new end, AlternateLBA and LastUsableLBA updated, every
// CRC valid. The partitions' data are not touched.
func incident(t testing.TB, src, dir string, srcSize, newSize int64) string {
	t.Helper()
	dst := sparse(t, dir, "incident.img", newSize)
	copyRegions(t, src, dst, gptRegions(srcSize, 512)...)
	hdr := readRaw(t, src, 512, 512)
	arr := readRaw(t, src, 1024, 128*128)
	compact(arr, 128)
	ft := &fxTable{SectorSize: 512, DiskSectors: uint64(newSize / 512), NumEntries: 128, Array: arr, DiskGUIDRaw: hdr[0x38:0x48]}
	ft.write(t, dst)
	return dst
}

// editArrays edits the entry array of both GPT copies of path (512- or
// 4096-byte sectors) in place and fixes the CRCs independently.
func editArrays(t testing.TB, path string, ss int, edit func(arr []byte)) {
	t.Helper()
	hdr := readRaw(t, path, int64(ss), ss)
	for _, lba := range []uint64{1, binary.LittleEndian.Uint64(hdr[0x20:])} {
		rewriteCopy(t, path, ss, lba, func(h, a []byte) { edit(a) })
	}
}
