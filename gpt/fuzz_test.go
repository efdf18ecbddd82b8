package gpt_test

import (
	"bytes"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// Fuzz seeds are real tables kept small so that the fuzzer can minimise
// what it finds: a 96-sector image partitioned by sgdisk with a 4-entry
// array (-S 4), the same made by the independent encoder with 4096-byte
// sectors, their layout files and an sgdisk backup. An image is given to
// FuzzRead as its head (LBA 0 on), its tail (ending at the last LBA) and
// its size in sectors; the sectors between read as zeros, so a fuzzed
// disk may be terabytes large without any allocation.

const seedSectors = 96

type seedImage struct {
	head, tail []byte
	sectors    uint64
	fourK      bool
	full       []byte // the whole image
}

var seedCache struct {
	sync.Mutex
	m map[string]seedImage
}

func seedImages(f testing.TB) map[string]seedImage {
	seedCache.Lock()
	defer seedCache.Unlock()
	if seedCache.m == nil {
		seedCache.m = makeSeedImages(f)
	}
	return seedCache.m
}

func makeSeedImages(f testing.TB) map[string]seedImage {
	gpttest.Need(f, "sgdisk")
	dir := f.TempDir()
	out := map[string]seedImage{}
	sg := gpttest.Sparse(f, dir, "seed.img", seedSectors*512)
	gpttest.Run(f, "sgdisk", "-S", "4", "-a", "1",
		"-n", "1:3:6", "-t", "1:C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "-c", "1:efi", "-A", "1:set:2",
		"-n", "3:7:9", "-t", "3:EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
		"-n", "2:10:20", "-t", "2:AA31E02A-400F-11DB-9590-000C2911D1B8", sg)
	img := gpttest.ReadAt(f, sg, 0, seedSectors*512)
	split := func(img []byte, ss int, fourK bool) seedImage {
		return seedImage{head: img[:3*ss], tail: img[len(img)-2*ss:], sectors: uint64(len(img) / ss), fourK: fourK, full: img}
	}
	out["sgdisk"] = split(img, 512, false)
	// A tiny 8-sector table (encoder) restored onto a bigger disk: the
	// backup is stranded in the middle, inside the head.
	ft8 := gpttest.NewTable(f, 512, 8*512, []gpttest.Part{{Slot: 2, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", First: 3, Last: 5, Name: "linux"}})
	ft8.NumEntries, ft8.Array = 4, ft8.Array[:4*128]
	out["grown"] = seedImage{head: ft8.Image(f, 8), sectors: 1008}
	t := out["sgdisk"]
	t.head = t.head[:2*512] // truncated: array missing
	out["cut"] = t
	bak := filepath.Join(dir, "seed.sgdisk")
	gpttest.Run(f, "sgdisk", "-b", bak, sg)
	out["sgdisk-backup"] = seedImage{full: gpttest.ReadAt(f, bak, 0, 3*512+4*128)}

	ft := gpttest.NewTable(f, 4096, 16*4096, []gpttest.Part{
		{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 3, Last: 7},
		{Slot: 3, Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", First: 8, Last: 10}})
	ft.NumEntries, ft.Array = 4, ft.Array[:4*128]
	out["4k"] = split(ft.Image(f, 16), 4096, true)
	return out
}

// headTail is a disk of size bytes holding head at its start and tail at
// its end, zeros between.
type headTail struct {
	head, tail []byte
	size       int64
}

func (h headTail) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= h.size {
		return 0, io.EOF
	}
	n := len(p)
	var err error
	if int64(n) > h.size-off {
		n, err = int(h.size-off), io.EOF
	}
	clear(p[:n])
	for _, e := range []struct {
		at int64
		b  []byte
	}{{0, h.head}, {h.size - int64(len(h.tail)), h.tail}} {
		lo, hi := max(off, e.at, 0), min(off+int64(n), e.at+int64(len(e.b)))
		if lo < hi {
			copy(p[lo-off:hi-off], e.b[lo-e.at:hi-e.at])
		}
	}
	return n, err
}

// checkTable asserts what must hold for any table Read returns.
func checkTable(t *testing.T, tb *gpt.Table) {
	t.Helper()
	for _, c := range []*gpt.Copy{tb.Primary, tb.Backup, tb.StrayBackup} {
		if c != nil && len(c.Array) > gpt.MaxArrayBytes {
			t.Fatalf("%s array of %d bytes", c.Which, len(c.Array))
		}
	}
	for _, s := range tb.Slots() {
		s.Entry()
	}
	tb.LastUsedLBA()
	d := gpt.Compare(tb, tb)
	if tb.Slots() != nil && (!d.Identical || d.Layout != gpt.LayoutSame || len(d.Moves)+len(d.Added)+len(d.Removed)+len(d.Changed) != 0) {
		t.Fatalf("a table differs from itself: %s", d.Verdict)
	}
	// The layout file keeps everything.
	var a bytes.Buffer
	if err := gpt.SaveLayout(&a, tb); err != nil {
		t.Fatal(err)
	}
	t2, err := gpt.LoadLayout(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatalf("LoadLayout of a saved table: %v", err)
	}
	if !reflect.DeepEqual(tb, t2) {
		t.Fatalf("layout round trip differs:\n%+v\n%+v", tb, t2)
	}
}

func FuzzRead(f *testing.F) {
	for name, im := range seedImages(f) {
		if name != "sgdisk-backup" {
			f.Add(im.head, im.tail, im.sectors, im.fourK)
		}
	}
	f.Fuzz(func(t *testing.T, head, tail []byte, sectors uint64, fourK bool) {
		ss := 512
		if fourK {
			ss = 4096
		}
		gpt.ParsePrimary(head, ss)
		sectors %= 1 << 40 // up to 4 PiB of 4096-byte sectors
		tb, err := gpt.Read(headTail{head, tail, int64(sectors) * int64(ss)}, int64(sectors)*int64(ss), ss)
		if err != nil {
			return
		}
		checkTable(t, tb)
	})
}

func FuzzLoadLayout(f *testing.F) {
	for name, im := range seedImages(f) {
		if name == "sgdisk-backup" {
			continue
		}
		ss := 512
		if im.fourK {
			ss = 4096
		}
		tb, err := gpt.Read(headTail{im.head, im.tail, int64(im.sectors) * int64(ss)}, int64(im.sectors)*int64(ss), ss)
		if err != nil {
			f.Fatal(err)
		}
		var buf bytes.Buffer
		if err := gpt.SaveLayout(&buf, tb); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := gpt.LoadLayout(bytes.NewReader(data))
		if err != nil {
			return
		}
		checkTable(t, tb)
	})
}

func FuzzReadSgdiskBackup(f *testing.F) {
	imgs := seedImages(f)
	f.Add(imgs["sgdisk-backup"].full)
	f.Add(imgs["sgdisk"].full[:3*512])
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := gpt.ReadSgdiskBackup(bytes.NewReader(data))
		if err != nil {
			return
		}
		checkTable(t, tb)
	})
}

// TestSeedImages: the fuzz seeds are what they claim (a fuzz target whose
// seeds do not parse tests little).
func TestSeedImages(t *testing.T) {
	want := map[string][]string{
		"sgdisk": nil, "4k": nil,
		"grown": {gpt.CodeBackupNotAtEnd, gpt.CodeMBRSize},
		"cut":   {gpt.CodeArrayCRC, gpt.CodePrimaryInvalid},
	}
	for name, im := range seedImages(t) {
		if name == "sgdisk-backup" {
			tb, err := gpt.ReadSgdiskBackup(bytes.NewReader(im.full))
			if err != nil || len(allCodes(tb)) != 0 || tb.LastUsedLBA() != 20 {
				t.Errorf("%s: %v %v", name, err, tb)
			}
			continue
		}
		ss := 512
		if im.fourK {
			ss = 4096
		}
		tb, err := gpt.Read(headTail{im.head, im.tail, int64(im.sectors) * int64(ss)}, int64(im.sectors)*int64(ss), ss)
		if err != nil {
			t.Fatal(err)
		}
		c := allCodes(tb)
		slices.Sort(c)
		w := want[name]
		slices.Sort(w)
		if !slices.Equal(c, w) || len(tb.Slots()) != 4 {
			t.Errorf("%s: problems %v (want %v), %d slots", name, tb.Problems, w, len(tb.Slots()))
		}
	}
}
