package gpt_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// layoutTables builds tables of several kinds for round trips: ESXi
// layouts on 512 and 4096-byte sectors, a stranded backup, a damaged
// primary, junk in unused slots, a disk with no GPT.
func layoutTables(t *testing.T) map[string]*gpt.Table {
	dir := t.TempDir()
	out := map[string]*gpt.Table{}
	const size = 8 * gib
	parts := esxiLayout(t, "5.0", size, 512)
	img := gpttest.SgdiskImage(t, dir, size, parts)
	out["esxi5"] = readFile(t, img, 512)

	p4 := gpttest.Sparse(t, dir, "4k.img", 12*gib)
	gpttest.NewTable(t, 4096, 12*gib, esxiLayout(t, "6.7", 12*gib, 4096)).Write(t, p4)
	out["esxi67-4k"] = readFile(t, p4, 4096)

	grown := gpttest.Sparse(t, dir, "grown.img", 12*gib)
	gpttest.CopyRegions(t, img, grown, gpttest.Regions(size, 512)...)
	out["grown"] = readFile(t, grown, 512)

	inc := gpttest.Incident(t, img, dir, size, 12*gib)
	out["incident"] = readFile(t, inc, 512)

	junk := gpttest.SgdiskImage(t, t.TempDir(), size, parts)
	gpttest.EditArrays(t, junk, 512, func(a []byte) { copy(a[20*128+16:], "junk"); copy(a[4*128+100:], "tail") })
	out["junk"] = readFile(t, junk, 512)

	dmg := gpttest.SgdiskImage(t, t.TempDir(), size, parts)
	f, _ := os.OpenFile(dmg, os.O_RDWR, 0)
	gpttest.WriteAt(t, f, []byte{0x77}, 512+0x38)    // primary header CRC now wrong
	gpttest.WriteAt(t, f, []byte{0x01}, 2*512+5*128) // and its array
	f.Close()
	out["primary-damaged"] = readFile(t, dmg, 512)

	absurd := gpttest.SgdiskImage(t, t.TempDir(), size, parts)
	gpttest.RewriteCopy(t, absurd, 512, 1, func(h, a []byte) { binary.LittleEndian.PutUint32(h[0x50:], 1<<30) })
	out["absurd-count"] = readFile(t, absurd, 512)

	empty := gpttest.Sparse(t, dir, "empty.img", 1<<20)
	out["no-gpt"] = readFile(t, empty, 512)
	return out
}

func TestLayoutRoundTrip(t *testing.T) {
	for name, tb := range layoutTables(t) {
		t.Run(name, func(t *testing.T) {
			var a bytes.Buffer
			if err := gpt.SaveLayout(&a, tb); err != nil {
				t.Fatal(err)
			}
			t2, err := gpt.LoadLayout(bytes.NewReader(a.Bytes()))
			if err != nil {
				t.Fatalf("%v\n%s", err, a.String()[:min(a.Len(), 2000)])
			}
			if !reflect.DeepEqual(tb, t2) {
				t.Errorf("loaded table differs:\nsaved  %+v\nloaded %+v", tb, t2)
			}
			var b bytes.Buffer
			if err := gpt.SaveLayout(&b, t2); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Error("saving the loaded table gives another file")
			}
			if tb.Slots() != nil {
				if d := gpt.Compare(tb, t2); !d.Identical || d.Layout != gpt.LayoutSame || len(d.Header) != 0 {
					t.Errorf("compare: %s", d.Verdict)
				}
			}
		})
	}
}

// TestLayoutReadable checks that the file says what a person needs.
func TestLayoutReadable(t *testing.T) {
	tb := layoutTables(t)["esxi5"]
	var buf bytes.Buffer
	if err := gpt.SaveLayout(&buf, tb); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	for _, want := range []string{`"sector_size": 512`, `"disk_size": 8589934592`, `"type_name": "vmkDiagnostic"`, `"first": 1032224`,
		`"slot": 4,` + "\n      \"used\": false", `"last_usable_lba": 16777182`, `"header_hex": "4546492050415254`, `"raw_hex": "`} {
		if !strings.Contains(s, want) {
			t.Errorf("layout lacks %q", want)
		}
	}
	if n := len(m["slots"].([]any)); n != 128 {
		t.Errorf("%d slots", n)
	}
}

// TestLayoutErrors: a hand-edited or broken file is refused with a clear
// error, never half-loaded.
func TestLayoutErrors(t *testing.T) {
	var buf bytes.Buffer
	if err := gpt.SaveLayout(&buf, layoutTables(t)["esxi5"]); err != nil {
		t.Fatal(err)
	}
	good := buf.String()
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"format", gpt.LayoutFormat, "something else", "format"},
		{"sector size", `"sector_size": 512`, `"sector_size": 1000`, "sector size"},
		{"disk size", `"disk_size": 8589934592`, `"disk_size": 1`, "disk size"},
		{"disk lbas", `"disk_lbas": 16777216`, `"disk_lbas": 5`, "disk_lbas"},
		{"decoded first edited", `"first": 1032224`, `"first": 1032225`, "disagree"},
		{"decoded header edited", `"last_usable_lba": 16777182`, `"last_usable_lba": 16777183`, "disagree"},
		{"slot renumbered", `"slot": 4,`, `"slot": 40,`, "slot 4"},
		{"bad hex", `"mbr_hex": "`, `"mbr_hex": "zz`, "mbr_hex"},
		{"unknown field", `"sector_size"`, `"sectorsize": 1, "sector_size"`, "unknown field"},
		{"not json", "{", "[", "layout file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(good, tc.old, tc.new, 1)
			if bad == good {
				t.Fatalf("%q not in the file", tc.old)
			}
			_, err := gpt.LoadLayout(strings.NewReader(bad))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestSgdiskBackup reads real `sgdisk --backup` files and compares them
// with the disks they were made from; sgdisk --load-backup of a file made
// from our layout's view restores the same table.
func TestSgdiskBackup(t *testing.T) {
	for _, tc := range []struct {
		v    string
		size int64
	}{{"5.0", 8 * gib}, {"6.7", 32 * gib}, {"7.0", 200 * gib}} {
		t.Run(tc.v, func(t *testing.T) {
			dir := t.TempDir()
			parts := esxiLayout(t, tc.v, tc.size, 512)
			parts[0].Name = "EFI boot"
			img := gpttest.SgdiskImage(t, dir, tc.size, parts)
			bak := filepath.Join(dir, "table.sgdisk")
			gpttest.Run(t, "sgdisk", "-b", bak, img)
			f, err := os.Open(bak)
			if err != nil {
				t.Fatal(err)
			}
			bt, err := gpt.ReadSgdiskBackup(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			it := readFile(t, img, 512)
			if c := allCodes(bt); len(c) != 0 {
				t.Errorf("problems in the backup: %v", bt.Problems)
			}
			if bt.DiskSize != it.DiskSize || bt.SectorSize != 512 || !reflect.DeepEqual(bt.Primary, it.Primary) || !reflect.DeepEqual(bt.Backup, it.Backup) || !bytes.Equal(bt.MBR, it.MBR) {
				t.Errorf("backup table differs from the disk's")
			}
			d := gpt.Compare(it, bt)
			if !d.Same() || !d.Identical {
				t.Errorf("compare: %s", d.Verdict)
			}
			checkSlots(t, bt, parts)

			// LoadReference tells the kinds apart.
			var js bytes.Buffer
			gpt.SaveLayout(&js, it)
			jsPath := filepath.Join(dir, "layout.json")
			os.WriteFile(jsPath, js.Bytes(), 0o644)
			for _, p := range []string{img, bak, jsPath} {
				rt, err := gpt.LoadReference(p, 0)
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				if d := gpt.Compare(it, rt); !d.Same() || !d.Identical || rt.DiskSize != it.DiskSize {
					t.Errorf("LoadReference(%s): %s", filepath.Base(p), d.Verdict)
				}
			}
		})
	}
	// Truncated and foreign files are errors.
	dir := t.TempDir()
	img := gpttest.SgdiskImage(t, dir, 64<<20, []gpttest.Part{{Slot: 1, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", First: 64, Last: 8191}})
	bak := filepath.Join(dir, "b")
	gpttest.Run(t, "sgdisk", "-b", bak, img)
	data, _ := os.ReadFile(bak)
	for name, b := range map[string][]byte{
		"truncated": data[:len(data)-1], "short": data[:1000], "longer": append(append([]byte(nil), data...), 0),
		"image": gpttest.ReadAt(t, img, 0, 1<<16), "zeros": make([]byte, len(data)),
	} {
		if _, err := gpt.ReadSgdiskBackup(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestSgdiskBackup4K: sgdisk cannot make a 4Kn image from a file, so the
// backup of a 4Kn disk is assembled by hand in sgdisk's layout (512-byte
// blocks: MBR, primary header, backup header, array); its sector size is
// inferred from FirstUsableLBA.
func TestSgdiskBackup4K(t *testing.T) {
	const size = 12 * gib
	dir := t.TempDir()
	parts := esxiLayout(t, "7.0", size, 4096)
	img := gpttest.Sparse(t, dir, "4k.img", size)
	ft := gpttest.NewTable(t, 4096, size, parts)
	ft.Write(t, img)
	last := uint64(size/4096 - 1)
	var bak []byte
	bak = append(bak, gpttest.ReadAt(t, img, 0, 512)...)
	bak = append(bak, gpttest.ReadAt(t, img, 4096, 512)...)
	bak = append(bak, gpttest.ReadAt(t, img, int64(last)*4096, 512)...)
	bak = append(bak, ft.Array...)
	bt, err := gpt.ReadSgdiskBackup(bytes.NewReader(bak))
	if err != nil {
		t.Fatal(err)
	}
	it := readFile(t, img, 4096)
	if bt.SectorSize != 4096 || bt.DiskSize != size {
		t.Fatalf("sector size %d, disk size %d", bt.SectorSize, bt.DiskSize)
	}
	if d := gpt.Compare(it, bt); !d.Same() || !d.Identical {
		t.Errorf("compare: %s", d.Verdict)
	}
	if _, err := gpt.ReadSgdiskBackupSectors(bytes.NewReader(bak), 1000); err == nil {
		t.Error("sector size 1000 accepted")
	}
}
