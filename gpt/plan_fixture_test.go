package gpt_test

// Fixtures for the repair tests, written without the package under test:
// sgdisk for 512-byte images, and a small hand-written encoder (raw
// offsets, encoding/binary, hash/crc32) for 4096-byte sectors and for the
// damage (compaction, sorting, broken copies).

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
)

const pfGiB = int64(1) << 30

// pfRun runs a command and fails the test when it fails.
func pfRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pfGUID converts canonical text to on-disk mixed-endian bytes.
func pfGUID(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		t.Fatalf("bad GUID %q", s)
	}
	out := make([]byte, 16)
	out[0], out[1], out[2], out[3] = b[3], b[2], b[1], b[0]
	out[4], out[5] = b[5], b[4]
	out[6], out[7] = b[7], b[6]
	copy(out[8:], b[8:])
	return out
}

// pfImage makes a sparse image of size bytes holding the ESXi layout of
// version v: sgdisk (-a 1 -n ...) for 512-byte sectors, the hand encoder
// for 4096. It returns the path and the layout's parts.
func pfImage(t testing.TB, dir, name string, v esxi.Version, size int64, ss int) (string, []esxi.Part) {
	t.Helper()
	parts, err := esxi.Layout(v, size, ss)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if ss == 512 {
		args := []string{"-a", "1"}
		for _, p := range parts {
			args = append(args, "-n", fmt.Sprintf("%d:%d:%d", p.Slot, p.First, p.Last), "-t", fmt.Sprintf("%d:%s", p.Slot, p.Type))
			for b := 0; b < 64; b++ {
				if p.Attrs&(1<<b) != 0 {
					args = append(args, "-A", fmt.Sprintf("%d:set:%d", p.Slot, b))
				}
			}
		}
		pfRun(t, "sgdisk", append(args, path)...)
		return path, parts
	}
	arr := make([]byte, 128*128)
	for _, p := range parts {
		e := arr[(p.Slot-1)*128 : p.Slot*128]
		first, last := p.LBAs(ss)
		copy(e[0:16], pfGUID(t, p.Type))
		rand.Read(e[16:32])
		binary.LittleEndian.PutUint64(e[32:], first)
		binary.LittleEndian.PutUint64(e[40:], last)
		binary.LittleEndian.PutUint64(e[48:], p.Attrs)
	}
	pfEncode(t, path, ss, arr)
	return path, parts
}

// pfEncode writes a protective MBR and both GPT copies holding arr
// (128 entries of 128 bytes) for the image's size, like sgdisk would.
func pfEncode(t testing.TB, path string, ss int, arr []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	last := uint64(fi.Size()/int64(ss)) - 1
	S := uint64((len(arr) + ss - 1) / ss)
	mbr := make([]byte, ss)
	mbr[446+4] = 0xEE
	binary.LittleEndian.PutUint32(mbr[446+8:], 1)
	binary.LittleEndian.PutUint32(mbr[446+12:], uint32(min(last, 0xFFFFFFFF)))
	mbr[510], mbr[511] = 0x55, 0xAA
	pfWrite(t, f, mbr, 0)
	var disk [16]byte
	rand.Read(disk[:])
	hdr := func(my, alt, entry uint64) []byte {
		h := make([]byte, ss)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x10000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[0x18:], my)
		binary.LittleEndian.PutUint64(h[0x20:], alt)
		binary.LittleEndian.PutUint64(h[0x28:], 2+S)
		binary.LittleEndian.PutUint64(h[0x30:], last-S-1)
		copy(h[0x38:], disk[:])
		binary.LittleEndian.PutUint64(h[0x48:], entry)
		binary.LittleEndian.PutUint32(h[0x50:], 128)
		binary.LittleEndian.PutUint32(h[0x54:], 128)
		binary.LittleEndian.PutUint32(h[0x58:], crc32.ChecksumIEEE(arr))
		binary.LittleEndian.PutUint32(h[0x10:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	pfWrite(t, f, arr, 2*int64(ss))
	pfWrite(t, f, hdr(1, last, 2), int64(ss))
	pfWrite(t, f, arr, int64(last-S)*int64(ss))
	pfWrite(t, f, hdr(last, 1, last-S), int64(last)*int64(ss))
}

func pfWrite(t testing.TB, f *os.File, b []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func pfRead(t testing.TB, path string, off int64, n int) []byte {
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

// pfRaw is one GPT copy as the test's own decoder sees it.
type pfRaw struct {
	hdr, arr         []byte
	my, alt, entry   uint64
	firstU, lastU    uint64
	hdrOK, arrOK     bool
	arrCRC, arrBytes uint32
}

// pfDecode reads the copy whose header is at lba, checking both CRCs.
func pfDecode(t testing.TB, path string, ss int, lba uint64) pfRaw {
	t.Helper()
	var c pfRaw
	c.hdr = pfRead(t, path, int64(lba)*int64(ss), ss)
	if string(c.hdr[:8]) != "EFI PART" {
		return c
	}
	h := bytes.Clone(c.hdr[:92])
	want := binary.LittleEndian.Uint32(h[0x10:])
	binary.LittleEndian.PutUint32(h[0x10:], 0)
	c.hdrOK = crc32.ChecksumIEEE(h) == want
	c.my = binary.LittleEndian.Uint64(c.hdr[0x18:])
	c.alt = binary.LittleEndian.Uint64(c.hdr[0x20:])
	c.firstU = binary.LittleEndian.Uint64(c.hdr[0x28:])
	c.lastU = binary.LittleEndian.Uint64(c.hdr[0x30:])
	c.entry = binary.LittleEndian.Uint64(c.hdr[0x48:])
	n := binary.LittleEndian.Uint32(c.hdr[0x50:]) * binary.LittleEndian.Uint32(c.hdr[0x54:])
	c.arrCRC = binary.LittleEndian.Uint32(c.hdr[0x58:])
	c.arr = pfRead(t, path, int64(c.entry)*int64(ss), int(n))
	c.arrOK = crc32.ChecksumIEEE(c.arr) == c.arrCRC
	return c
}

// pfRewrite edits the arrays of both copies (primary at LBA 1, backup
// where the primary points) and makes every CRC valid again: the way the
// incident's culprit left the disk.
func pfRewrite(t testing.TB, path string, ss int, edit func(arr []byte)) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := pfDecode(t, path, ss, 1)
	for _, lba := range []uint64{1, p.alt} {
		c := pfDecode(t, path, ss, lba)
		arr := bytes.Clone(c.arr)
		edit(arr)
		h := bytes.Clone(c.hdr)
		binary.LittleEndian.PutUint32(h[0x58:], crc32.ChecksumIEEE(arr))
		binary.LittleEndian.PutUint32(h[0x10:], 0)
		binary.LittleEndian.PutUint32(h[0x10:], crc32.ChecksumIEEE(h[:92]))
		pfWrite(t, f, arr, int64(c.entry)*int64(ss))
		pfWrite(t, f, h, int64(lba)*int64(ss))
	}
}

// pfCompact closes the gaps between used entries, keeping their order.
func pfCompact(arr []byte) {
	var used [][]byte
	for i := 0; i < len(arr)/128; i++ {
		e := arr[i*128 : (i+1)*128]
		if !bytes.Equal(e[:16], make([]byte, 16)) {
			used = append(used, bytes.Clone(e))
		}
	}
	clear(arr)
	for i, e := range used {
		copy(arr[i*128:], e)
	}
}

// pfSort puts the used entries in disk order from slot 1 on.
func pfSort(arr []byte) {
	pfCompact(arr)
	var used [][]byte
	for i := 0; i < len(arr)/128; i++ {
		e := arr[i*128 : (i+1)*128]
		if !bytes.Equal(e[:16], make([]byte, 16)) {
			used = append(used, bytes.Clone(e))
		}
	}
	sort.Slice(used, func(i, j int) bool {
		return binary.LittleEndian.Uint64(used[i][32:]) < binary.LittleEndian.Uint64(used[j][32:])
	})
	for i, e := range used {
		copy(arr[i*128:], e)
	}
}

// pfGrow raw-copies src to a new sparse file of size bytes, like
// restoring the image onto a bigger disk (or a smaller one).
func pfGrow(t testing.TB, src, dst string, size int64) {
	t.Helper()
	pfRun(t, "cp", "--sparse=always", src, dst)
	if err := os.Truncate(dst, size); err != nil {
		t.Fatal(err)
	}
}

// pfMarkers writes random 4 KiB blocks at the start, middle and end of
// every partition and returns their SHA-256s by offset.
func pfMarkers(t testing.TB, path string, parts []esxi.Part) map[int64]string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[int64]string{}
	for _, p := range parts {
		start, end := int64(p.First)*512, int64(p.Last+1)*512
		for _, off := range []int64{start, (start + end) / 2 / 4096 * 4096, end - 4096} {
			b := make([]byte, 4096)
			rand.Read(b)
			pfWrite(t, f, b, off)
			s := sha256.Sum256(b)
			m[off] = hex.EncodeToString(s[:])
		}
	}
	return m
}

// pfCheckMarkers fails when any marker block changed.
func pfCheckMarkers(t testing.TB, path string, m map[int64]string) {
	t.Helper()
	for off, want := range m {
		s := sha256.Sum256(pfRead(t, path, off, 4096))
		if hex.EncodeToString(s[:]) != want {
			t.Errorf("partition data at byte %d changed", off)
		}
	}
}

// pfSgdiskVerify runs sgdisk -v on a 512-byte image and fails unless it
// reports no problems.
func pfSgdiskVerify(t testing.TB, path string) {
	t.Helper()
	out := pfRun(t, "sgdisk", "-v", path)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", path, out)
	}
}

// pfSgdiskSlots returns "slot:first-last" for each partition sgdisk -p lists.
func pfSgdiskSlots(t testing.TB, path string) []string {
	t.Helper()
	out := pfRun(t, "sgdisk", "-p", path)
	var s []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "Number" {
			in = true
			continue
		}
		if in && len(f) >= 3 {
			s = append(s, f[0]+":"+f[1]+"-"+f[2])
		}
	}
	return s
}

// pfLayoutSlots is what pfSgdiskSlots should say for a layout.
func pfLayoutSlots(parts []esxi.Part) []string {
	var s []string
	for _, p := range esxi.BySlot(parts) {
		s = append(s, fmt.Sprintf("%d:%d-%d", p.Slot, p.First, p.Last))
	}
	return s
}

// pfSgdiskRaw runs sgdisk, returning its combined output whatever its exit status.
func pfSgdiskRaw(path string, args ...string) (string, error) {
	out, err := exec.Command("sgdisk", append(args, path)...).CombinedOutput()
	return string(out), err
}

// pfCheckSfdisk checks with sfdisk --json that every partition of the
// layout is listed under its entry number (the N of the node name) with
// its start and size.
func pfCheckSfdisk(t testing.TB, path string, parts []esxi.Part) {
	t.Helper()
	var d struct {
		PartitionTable struct {
			Label      string
			Partitions []struct {
				Node        string
				Start, Size uint64
			}
		}
	}
	if err := json.Unmarshal([]byte(pfRun(t, "sfdisk", "--json", path)), &d); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range d.PartitionTable.Partitions {
		got[strings.TrimPrefix(p.Node, path)] = fmt.Sprintf("%d+%d", p.Start, p.Size)
	}
	if d.PartitionTable.Label != "gpt" || len(got) != len(parts) {
		t.Errorf("sfdisk --json: label %q, %d partitions, want gpt with %d", d.PartitionTable.Label, len(got), len(parts))
	}
	for _, p := range parts {
		if want := fmt.Sprintf("%d+%d", p.First, p.Last-p.First+1); got[fmt.Sprint(p.Slot)] != want {
			t.Errorf("sfdisk --json: partition %d is %q, want %s", p.Slot, got[fmt.Sprint(p.Slot)], want)
		}
	}
}
