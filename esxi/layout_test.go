package esxi

import (
	"fmt"
	"strings"
	"testing"
)

// fact is one entry as partedUtil getptbl prints it: number, first and
// last LBA (in the disk's sectors), type, and the entry name.
type fact struct {
	slot        int
	first, last uint64
	typ         string
	name        string
}

// TestLayoutFacts checks every version, medium and size class against
// tables written out by hand from the facts (partedUtil outputs from the
// field, VMware's documentation; see the sources in layout.go), in disk
// order. The numbers here are typed in, not computed by the code tested.
func TestLayoutFacts(t *testing.T) {
	const (
		efi, bd, diag, vmfs, vmfsl = TypeEFISystem, TypeBasicData, TypeVMKDiagnostic, TypeVMFS, TypeVMFSL
	)
	fixed5 := []fact{{1, 64, 8191, efi, ""}, {5, 8224, 520191, bd, ""}, {6, 520224, 1032191, bd, ""}, {7, 1032224, 1257471, diag, ""}, {8, 1257504, 1843199, bd, ""}}
	with := func(base []fact, more ...fact) []fact { return append(append([]fact(nil), base...), more...) }
	diag9 := fact{9, 1843200, 7086079, diag, ""}
	sys7 := fact{1, 64, 204863, efi, "BOOT"}
	big7 := []fact{sys7, {5, 208896, 8595455, bd, "BOOTBANK1"}, {6, 8597504, 16984063, bd, "BOOTBANK2"}}
	cases := []struct {
		spec Spec
		want []fact
	}{
		// 5.x on an 8 GiB disk (16777216 sectors): datastore to disk - 34.
		{Spec{Version: "5.0", DiskBytes: 8 * gib}, with(fixed5, fact{2, 1843200, 10229759, bd, ""}, fact{3, 10229760, 16777182, vmfs, ""})},
		{Spec{Version: "5.5", DiskBytes: 8 * gib}, with(fixed5, fact{2, 1843200, 10229759, bd, ""}, fact{3, 10229760, 16777182, vmfs, ""})},
		{Spec{Version: "5.0", DiskBytes: 2 * gib}, fixed5},
		{Spec{Version: "5.0", DiskBytes: 8 * gib, Media: MediaUSB}, fixed5},
		// 6.0 on a 16 GiB disk: the partedUtil output at vinfrastructure.it.
		{Spec{Version: "6.0", DiskBytes: 16 * gib}, with(fixed5, diag9, fact{2, 7086080, 15472639, bd, ""}, fact{3, 15472640, 33554398, vmfs, ""})},
		{Spec{Version: "6.5", DiskBytes: 16 * gib}, with(fixed5, diag9, fact{2, 7086080, 15472639, bd, ""}, fact{3, 15472640, 33554398, vmfs, ""})},
		// 512e: rounded down to 4 KiB.
		{Spec{Version: "6.7", DiskBytes: 16 * gib, PhysicalSectorSize: 4096}, with(fixed5, diag9, fact{2, 7086080, 15472639, bd, ""}, fact{3, 15472640, 33554391, vmfs, ""})},
		// 4Kn: 4096-byte LBAs, last usable = disk - 6 sectors.
		{Spec{Version: "6.7", DiskBytes: 16 * gib, SectorSize: 4096}, []fact{{1, 8, 1023, efi, ""}, {5, 1028, 65023, bd, ""}, {6, 65028, 129023, bd, ""}, {7, 129028, 157183, diag, ""}, {8, 157188, 230399, bd, ""}, {9, 230400, 885759, diag, ""}, {2, 885760, 1934079, bd, ""}, {3, 1934080, 4194298, vmfs, ""}}},
		// 6.x between 3.4 and 8.5 GB, and on USB/SD: 1,5,6,7,8,9.
		{Spec{Version: "6.7", DiskBytes: 8 * gib}, with(fixed5, diag9)},
		{Spec{Version: "6.7", DiskBytes: 16 * gib, Media: MediaUSB}, with(fixed5, diag9)},
		{Spec{Version: "6.0", DiskBytes: 64 * gib, Media: MediaUSB}, with(fixed5, diag9)},
		{Spec{Version: "6.7", DiskBytes: 3 * gib, Media: MediaUSB}, fixed5},
		// upgraded from 5.x: the 5.x table stays.
		{Spec{Version: "6.7", DiskBytes: 16 * gib, UpgradedFrom: "5.0"}, with(fixed5, fact{2, 1843200, 10229759, bd, ""}, fact{3, 10229760, 33554398, vmfs, ""})},
		{Spec{Version: "6.5", DiskBytes: 16 * gib, UpgradedFrom: "6.0"}, with(fixed5, diag9, fact{2, 7086080, 15472639, bd, ""}, fact{3, 15472640, 33554398, vmfs, ""})},
		// 7.0/8.0 on big media (200 GiB = 419430400 sectors).
		{Spec{Version: "7.0", DiskBytes: 200 * gib}, with(big7, fact{7, 16986112, 268435455, vmfsl, "OSDATA"}, fact{8, 268437504, 419430366, vmfs, "datastore1"})},
		{Spec{Version: "8.0", DiskBytes: 200 * gib}, with(big7, fact{7, 16986112, 268435455, vmfsl, "OSDATA"}, fact{8, 268437504, 419430366, vmfs, "datastore1"})},
		{Spec{Version: "8.0", DiskBytes: 200 * gib, UpgradedFrom: "7.0"}, with(big7, fact{7, 16986112, 268435455, vmfsl, "OSDATA"}, fact{8, 268437504, 419430366, vmfs, "datastore1"})},
		// 40 GiB: no datastore, OSDATA to the end.
		{Spec{Version: "7.0", DiskBytes: 40 * gib}, with(big7, fact{7, 16986112, 83886046, vmfsl, "OSDATA"})},
		{Spec{Version: "8.0", DiskBytes: 40 * gib}, with(big7, fact{7, 16986112, 83886046, vmfsl, "OSDATA"})},
		// 132 GiB (141.7 GB): not yet a datastore; 133 GiB (142.8 GB): one.
		{Spec{Version: "7.0", DiskBytes: 132 * gib}, with(big7, fact{7, 16986112, 268435455, vmfsl, "OSDATA"})},
		{Spec{Version: "7.0", DiskBytes: 133 * gib}, with(big7, fact{7, 16986112, 268435455, vmfsl, "OSDATA"}, fact{8, 268437504, 278921182, vmfs, "datastore1"})},
		// systemMediaSize=min on 80 GiB: OSDATA to 32 GiB, then the datastore.
		{Spec{Version: "7.0", DiskBytes: 80 * gib, SystemMediaSize: "min"}, with(big7, fact{7, 16986112, 67108863, vmfsl, "OSDATA"}, fact{8, 67110912, 167772126, vmfs, "datastore1"})},
		{Spec{Version: "8.0", DiskBytes: 200 * gib, SystemMediaSize: "small"}, with(big7, fact{7, 16986112, 134217727, vmfsl, "OSDATA"}, fact{8, 134219776, 419430366, vmfs, "datastore1"})},
		{Spec{Version: "7.0", DiskBytes: 200 * gib, SystemMediaSize: "max"}, with(big7, fact{7, 16986112, 419430366, vmfsl, "OSDATA"})},
		// 10-32 GB: 1 GiB banks (8.0's partedUtil: 5 = 208896-2306047).
		{Spec{Version: "8.0", DiskBytes: 16 * gib, Media: MediaUSB}, []fact{sys7, {5, 208896, 2306047, bd, "BOOTBANK1"}, {6, 2308096, 4405247, bd, "BOOTBANK2"}}},
		{Spec{Version: "7.0", DiskBytes: 16 * gib}, []fact{sys7, {5, 208896, 2306047, bd, "BOOTBANK1"}, {6, 2308096, 4405247, bd, "BOOTBANK2"}, {7, 4407296, 33554398, vmfsl, "OSDATA"}}},
		// 8-10 GB: 500 MiB banks (1024000 sectors).
		{Spec{Version: "7.0", DiskBytes: 8 * gib}, []fact{sys7, {5, 208896, 1232895, bd, "BOOTBANK1"}, {6, 1234944, 2258943, bd, "BOOTBANK2"}, {7, 2260992, 16777182, vmfsl, "OSDATA"}}},
		// 7.x on USB: 1, 5, 6 only.
		{Spec{Version: "7.0", DiskBytes: 64 * gib, Media: MediaUSB}, big7},
		// 4Kn 7.0: the same bytes in 4 KiB sectors.
		{Spec{Version: "7.0", DiskBytes: 200 * gib, SectorSize: 4096}, []fact{{1, 8, 25607, efi, "BOOT"}, {5, 26112, 1074431, bd, "BOOTBANK1"}, {6, 1074688, 2123007, bd, "BOOTBANK2"}, {7, 2123264, 33554431, vmfsl, "OSDATA"}, {8, 33554688, 52428794, vmfs, "datastore1"}}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%+v", c.spec), func(t *testing.T) {
			parts, err := LayoutFor(c.spec)
			if err != nil {
				t.Fatal(err)
			}
			ss := c.spec.SectorSize
			if ss == 0 {
				ss = 512
			}
			var got []fact
			for _, p := range parts {
				f, l := p.LBAs(ss)
				got = append(got, fact{p.Slot, f, l, p.Type, p.Name})
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("layout\n got %v\nwant %v", got, c.want)
			}
			// The thin wrapper gives the same for a plain fresh install.
			s := c.spec
			if s.Media == "" && s.SystemMediaSize == "" && s.UpgradedFrom == "" && s.PhysicalSectorSize == 0 {
				old, err := Layout(s.Version, s.DiskBytes, ss)
				if err != nil || fmt.Sprint(old) != fmt.Sprint(parts) {
					t.Errorf("Layout() = %v, %v; LayoutFor = %v", old, err, parts)
				}
			}
		})
	}
}

func TestLayoutRefuses(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Version: "5.0", DiskBytes: 8 * gib, SectorSize: 4096}, "4Kn"},
		{Spec{Version: "6.0", DiskBytes: 8 * gib, SectorSize: 4096}, "4Kn"},
		{Spec{Version: "6.7", DiskBytes: 8 * gib, SectorSize: 1024}, "sector size"},
		{Spec{Version: "6.7", DiskBytes: 8 * gib, SectorSize: 4096, PhysicalSectorSize: 512}, "physical"},
		{Spec{Version: "6.7", DiskBytes: 8 * gib, SystemMediaSize: "min"}, "7.0 U1c"},
		{Spec{Version: "7.0", DiskBytes: 80 * gib, SystemMediaSize: "tiny"}, "systemMediaSize"},
		{Spec{Version: "7.0", DiskBytes: 80 * gib, UpgradedFrom: "6.7"}, "repartitions"},
		{Spec{Version: "6.0", DiskBytes: 8 * gib, UpgradedFrom: "6.7"}, "newer"},
		{Spec{Version: "6.7", DiskBytes: 8 * gib, Media: "floppy"}, "medium"},
		{Spec{Version: "9.0", DiskBytes: 8 * gib}, "unknown version"},
		{Spec{Version: "8.0", DiskBytes: 16 * gib}, "too small"}, // 8.0 wants room for OSDATA on a disk
		{Spec{Version: "7.0", DiskBytes: 6 * gib}, "too small"},
		{Spec{Version: "5.0", DiskBytes: 512 << 20}, "too small"},
	} {
		if _, err := LayoutFor(c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one saying %q", c.spec, err, c.want)
		}
	}
}
