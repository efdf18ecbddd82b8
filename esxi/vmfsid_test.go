package esxi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// rawLVMHeader writes a VMFS LVM device header byte by byte, the way the
// brief and vmfs-tools describe it, without the package's encoder.
func rawLVMHeader(vendor, model, rev string, id []byte) []byte {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint32(b[0:], 0xC001D00D)
	binary.LittleEndian.PutUint32(b[4:], 14)
	b[0x0C] = 3             // type
	b[0x0D] = byte(len(id)) // length
	b[0x0E] = 0             // LUN (16 bits)
	b[0x10] = 0             // device type: direct access
	b[0x11] = 6             // SCSI level
	copy(b[0x12:0x1A], []byte(vendor + "        ")[:8])
	copy(b[0x1A:0x2A], []byte(model + "                ")[:16])
	copy(b[0x2A:0x2E], []byte(rev + "    ")[:4])
	copy(b[0x2E:0x2E+44], id)
	return b
}

// fakeSysfs makes a /sys/block/NAME-like directory.
func fakeSysfs(t *testing.T, files map[string][]byte) string {
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// vpd83 builds a VPD page 0x83 with one binary NAA designator.
func vpd83(naa []byte) []byte {
	d := append([]byte{0x01, 0x03, 0x00, byte(len(naa))}, naa...)
	return append([]byte{0x00, 0x83, 0x00, byte(len(d))}, d...)
}

// TestVMFSIdentity: a datastore whose header names another disk gives the
// snapshot warning with the esxcli commands; one made on this disk (SCSI
// wwid, VPD page 0x83, NVMe EUI) gives none.
func TestVMFSIdentity(t *testing.T) {
	opt := CreateOptions{Version: "6.7", Size: 16 << 30, Seed: 51}
	img := createImage(t, opt)
	parts, _ := Layout(opt.Version, opt.Size, 512)
	var ds Part
	for _, p := range parts {
		if p.Role == RoleDatastore {
			ds = p
		}
	}
	naa, _ := hex.DecodeString("600508b1001c5e2ab0b4f8e4a1c2d3e4")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	gpttest.WriteAt(t, f, rawLVMHeader("HP", "LOGICAL VOLUME", "7.00", naa), int64(ds.First)*512+1<<20)
	f.Close()

	same := map[string]map[string][]byte{
		"scsi-wwid": {"device/vendor": []byte("HP      \n"), "device/model": []byte("LOGICAL VOLUME  \n"), "device/wwid": []byte("naa.600508b1001c5e2ab0b4f8e4a1c2d3e4\n")},
		"scsi-vpd":  {"device/vendor": []byte("HP\n"), "device/model": []byte("LOGICAL VOLUME\n"), "device/vpd_pg83": vpd83(naa)},
	}
	other, _ := hex.DecodeString("600508b1001c0000000000000000beef")
	differ := map[string]map[string][]byte{
		"new-raid-ld": {"device/vendor": []byte("HP\n"), "device/model": []byte("LOGICAL VOLUME\n"), "device/wwid": []byte("naa.600508b1001c0000000000000000beef\n"), "device/vpd_pg83": vpd83(other)},
		"nvme":        {"eui": []byte("0025388b71b0c1e2\n"), "wwid": []byte("eui.0025388b71b0c1e2\n"), "device/model": []byte("Samsung SSD 970\n")},
		"other-model": {"device/vendor": []byte("DELL\n"), "device/model": []byte("PERC H730P Mini\n")},
	}
	check := func(name string, files map[string][]byte, wantWarn bool) {
		t.Run(name, func(t *testing.T) {
			id, err := SysfsIdentity(fakeSysfs(t, files))
			if err != nil {
				t.Fatal(err)
			}
			rep := inspectFile(t, img)
			n := rep.CheckIdentity(id)
			var v *VolumeReport
			for i := range rep.Volumes {
				if rep.Volumes[i].Slot == 3 {
					v = &rep.Volumes[i]
				}
			}
			if v == nil || v.Header == nil || strings.TrimSpace(v.Header.Disk.Vendor) != "HP" || !bytes.Equal(v.Header.Disk.ID, naa) || v.Label != "datastore1" {
				t.Fatalf("datastore volume %+v", v)
			}
			if (n > 0) != wantWarn {
				t.Errorf("%d warnings, want warning %v: %v (%s: %s)", n, wantWarn, rep.Warnings, v.Identity, v.Why)
			}
			text := rep.String()
			if wantWarn && (!strings.Contains(text, "esxcli storage vmfs snapshot list") || !strings.Contains(text, "esxcli storage vmfs snapshot mount -l datastore1")) {
				t.Errorf("no snapshot advice:\n%s", text)
			}
			if !wantWarn && strings.Contains(text, "snapshot") {
				t.Errorf("snapshot warning on the same disk:\n%s", text)
			}
		})
	}
	for n, f := range same {
		check(n, f, false)
	}
	for n, f := range differ {
		check(n, f, true)
	}
	// Against a reference image's header: the one Create wrote on OSDATA
	// of another seed names another disk; the same bytes name this one.
	rep := inspectFile(t, img)
	var hdr *LVMHeader
	for _, v := range rep.Volumes {
		if v.Slot == 3 {
			hdr = v.Header
		}
	}
	if n := rep.CheckIdentity(IdentityOf(hdr, "reference")); n != 0 {
		t.Errorf("same header: %v", rep.Warnings)
	}
	ref := CreateOptions{Seed: 52}.DefaultDiskID()
	rep = inspectFile(t, img)
	if n := rep.CheckIdentity(IdentityOf(&LVMHeader{Disk: ref}, "reference")); n != 1 {
		t.Errorf("other reference: %d warnings %v", n, rep.Warnings)
	}
}

// TestCreateLVMHeader: Create's header, read back field by field at the
// offsets the brief gives.
func TestCreateLVMHeader(t *testing.T) {
	opt := CreateOptions{Version: "7.0", Size: 200 << 30, Seed: 53}
	img := createImage(t, opt)
	parts, _ := Layout(opt.Version, opt.Size, 512)
	for _, p := range parts {
		if p.Role != RoleDatastore && p.Role != RoleOSData {
			continue
		}
		b := gpttest.ReadAt(t, img, int64(p.First)*512+1<<20, 512)
		if binary.LittleEndian.Uint32(b) != 0xC001D00D || string(b[0x12:0x1A]) != "ESXISTUB" || b[0x0D] != 16 || !bytes.Equal(b[0x2E:0x3E], opt.DefaultDiskID().ID) {
			t.Errorf("slot %d: header % x", p.Slot, b[:0x40])
		}
		if want := byte(0); p.Role == RoleOSData && b[0xD2] != 1 || p.Role == RoleDatastore && b[0xD2] != want {
			t.Errorf("slot %d: VMFS-L flag %d", p.Slot, b[0xD2])
		}
		fsi := gpttest.ReadAt(t, img, int64(p.First)*512+0x1200000, 512)
		if binary.LittleEndian.Uint32(fsi) != 0x2FABF15E {
			t.Errorf("slot %d: no fs info magic", p.Slot)
		}
	}
}

// TestWindowsSigns: the windows damage mode's litter is listed; an
// original disk has none.
func TestWindowsSigns(t *testing.T) {
	img := createImage(t, CreateOptions{Version: "5.0", Size: 8 << 30, Seed: 54})
	if rep := inspectFile(t, img); len(rep.WindowsSigns) != 0 {
		t.Errorf("original: %v", rep.WindowsSigns)
	}
	d := filepath.Join(t.TempDir(), "w.img")
	if err := Damage(d, "windows", DamageOptions{Source: img}); err != nil {
		t.Fatal(err)
	}
	rep := inspectFile(t, d)
	if len(rep.WindowsSigns) < 3 || !strings.Contains(strings.Join(rep.WindowsSigns, ";"), "$RECYCLE.BIN") || !strings.Contains(rep.String(), "harmless") {
		t.Errorf("windows-damaged: %v\n%s", rep.WindowsSigns, rep)
	}
}

func TestParseVPD83(t *testing.T) {
	pg := append(vpd83([]byte{1, 2, 3, 4}), 0x02, 0x01, 0, 3, 'a', 'b', 'c')
	pg[3] += 7
	ds := ParseVPD83(pg)
	if len(ds) != 2 || !bytes.Equal(ds[0], []byte{1, 2, 3, 4}) || string(ds[1]) != "abc" {
		t.Errorf("designators %q", ds)
	}
	if ParseVPD83([]byte{0, 0x80, 0, 0}) != nil || ParseVPD83(nil) != nil {
		t.Error("not a page 0x83, but designators")
	}
}

// FuzzParseLVMHeader: never panics; what it parses round-trips through
// the encoder.
func FuzzParseLVMHeader(f *testing.F) {
	f.Add(rawLVMHeader("HP", "LOGICAL VOLUME", "7.00", []byte{0x60, 1, 2}))
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseLVMHeader(b)
		if err != nil {
			return
		}
		h2, err := ParseLVMHeader(h.marshal())
		if err != nil || h2.Disk.String() != h.Disk.String() || h2.UUID != h.UUID || h2.VMFSLFlag != h.VMFSLFlag {
			t.Fatalf("round trip: %+v -> %+v (%v)", h, h2, err)
		}
		_ = ParseFSLabel(b)
		_ = ParseVPD83(b)
		CompareIdentity(h.Disk, &DiskIdentity{Vendor: "x", IDs: [][]byte{b}})
	})
}
