package inventory

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const testPCIIDs = `# comment
1000  Broadcom / LSI
	0054  SAS1068 PCI-X Fusion-MPT SAS
		1000 8000  subsystem line, skipped
	0060  MegaRAID SAS 1078
14e4  Broadcom Inc. and subsidiaries
	164e  NetXtreme II BCM5708 Gigabit Ethernet
	168e  NetXtreme II BCM57810 10 Gigabit Ethernet
1af4  Red Hat, Inc.
	1001  Virtio block device
bad line
8086  Intel Corporation
	100e  82540EM Gigabit Ethernet Controller
C 01  Mass storage controller
	00  SCSI storage controller
	04  RAID bus controller
C 02  Network controller
	00  Ethernet controller
C 03  Display controller
C 0c  Serial bus controller
	03  USB controller
		30  XHCI
`

// fakePCI adds a PCI device to a fake sysfs tree under root.
func fakePCI(t *testing.T, root, addr, vendor, device, class, driver string) {
	t.Helper()
	d := filepath.Join(root, "sys/devices/pci0000:00", addr)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"vendor": "0x" + vendor, "device": "0x" + device, "class": "0x" + class,
		"modalias": "pci:v0000" + strings.ToUpper(vendor) + "d0000" + strings.ToUpper(device) + "sv*"} {
		os.WriteFile(filepath.Join(d, k), []byte(v+"\n"), 0o444)
	}
	if driver != "" {
		drv := filepath.Join(root, "sys/bus/pci/drivers", driver)
		os.MkdirAll(drv, 0o755)
		os.Symlink(drv, filepath.Join(d, "driver"))
	}
	os.MkdirAll(filepath.Join(root, "sys/bus/pci/devices"), 0o755)
	os.Symlink(d, filepath.Join(root, "sys/bus/pci/devices", addr))
}

func TestHardwareReport(t *testing.T) {
	root := t.TempDir()
	fakePCI(t, root, "0000:00:04.0", "1000", "0054", "010000", "mptsas")
	fakePCI(t, root, "0000:00:05.0", "14e4", "168e", "020000", "bnx2x")    // bound, but its firmware is missing
	fakePCI(t, root, "0000:00:06.0", "14e4", "164e", "020000", "")         // no module claims it
	fakePCI(t, root, "0000:00:07.0", "1000", "0060", "010400", "")         // claimed, not bound
	fakePCI(t, root, "0000:00:08.0", "abcd", "0001", "010000", "")         // unknown to pci.ids
	fakePCI(t, root, "0000:00:02.0", "1234", "1111", "030000", "bochs")    // display: not listed
	fakePCI(t, root, "0000:00:09.0", "8086", "100e", "0c0330", "xhci_hcd") // USB controller
	// The firmware loader's sysfs fallback waiting for a file for 00:04.0.
	fwd := filepath.Join(root, "sys/class/firmware", "mptsas!fake.fw")
	os.MkdirAll(fwd, 0o755)
	os.Symlink(filepath.Join(root, "sys/devices/pci0000:00/0000:00:04.0"), filepath.Join(fwd, "device"))
	os.MkdirAll(filepath.Join(root, "sys/class/firmware/timeout"), 0o755)

	ids, err := ParsePCIIDs(strings.NewReader(testPCIIDs))
	if err != nil {
		t.Fatal(err)
	}
	claim := func(ma string) []string {
		switch {
		case strings.HasPrefix(ma, "pci:v00001000d00000060"):
			return []string{"megaraid_sas"}
		case strings.HasPrefix(ma, "pci:v00001000"):
			return []string{"mptsas"}
		case strings.HasPrefix(ma, "pci:v000014E4d0000168E"):
			return []string{"bnx2x"}
		}
		return nil
	}
	klog := `<6>[    3.000000] bnx2x 0000:00:05.0: msix capability found
<3>[    3.100000] bnx2x 0000:00:05.0: Direct firmware load for bnx2x/bnx2x-e2-7.13.21.0.fw failed with error -2
<3>[    3.100001] bnx2x 0000:00:05.0: Direct firmware load for bnx2x/bnx2x-e2-7.13.21.0.fw failed with error -2
[    4.2] r8152 2-1:1.0: Direct firmware load for rtl_nic/rtl8153a-4.fw failed with error -2
`
	h, err := Sys{Root: root}.HardwareReport(ids, claim, klog)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"0000:00:04.0 [1000:0054] SCSI storage controller: Broadcom / LSI SAS1068 PCI-X Fusion-MPT SAS — driver mptsas; firmware missing: mptsas/fake.fw",
		"0000:00:05.0 [14e4:168e] Ethernet controller: Broadcom Inc. and subsidiaries NetXtreme II BCM57810 10 Gigabit Ethernet — driver bnx2x; firmware missing: bnx2x/bnx2x-e2-7.13.21.0.fw",
		"0000:00:06.0 [14e4:164e] Ethernet controller: Broadcom Inc. and subsidiaries NetXtreme II BCM5708 Gigabit Ethernet — no driver in this image",
		"0000:00:07.0 [1000:0060] RAID bus controller: Broadcom / LSI MegaRAID SAS 1078 — not bound (the image's megaraid_sas did not take it; see dmesg)",
		"0000:00:08.0 [abcd:0001] SCSI storage controller: (unknown device) — no driver in this image",
		"0000:00:09.0 [8086:100e] USB controller: Intel Corporation 82540EM Gigabit Ethernet Controller — driver xhci_hcd",
		"r8152 2-1:1.0: firmware missing: rtl_nic/rtl8153a-4.fw",
	}
	if got := h.Lines(); !reflect.DeepEqual(got, want) {
		t.Errorf("report:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if h.PCI[1].Vendor != "14e4" || h.PCI[1].Device != "168e" || h.PCI[1].Class != "020000" {
		t.Errorf("IDs %+v", h.PCI[1])
	}
	// Without pci.ids or a module index the report still lists the devices.
	h, err = Sys{Root: root}.HardwareReport(nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.PCI) != 6 || h.PCI[2].String() != "0000:00:06.0 [14e4:164e] class 020000: (unknown device) — no driver in this image" {
		t.Errorf("without names: %q", h.Lines())
	}
}

func TestHardwareReportNoPCI(t *testing.T) {
	if _, err := (Sys{Root: t.TempDir()}).HardwareReport(nil, nil, ""); err == nil {
		t.Error("no sys/bus/pci: want an error")
	}
}

func TestParsePCIIDsRealFile(t *testing.T) {
	// The build's copy (initramfs/build.sh fetches Debian's pci.ids), else the machine's.
	cands, _ := filepath.Glob("../../.cache/misc/pci.ids_*/usr/share/misc/pci.ids")
	cands = append(cands, "/usr/share/misc/pci.ids")
	var f *os.File
	var err error
	for _, c := range cands {
		if f, err = os.Open(c); err == nil {
			break
		}
	}
	if f == nil {
		t.Skipf("no pci.ids (run ./build.sh, or install the Debian package pci.ids): %v", err)
	}
	defer f.Close()
	ids, err := ParsePCIIDs(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		v, d       uint16
		wantVendor string
		wantDevice string
	}{
		{0x1000, 0x0054, "Broadcom / LSI", "SAS1068 PCI-X Fusion-MPT SAS"},
		{0x15ad, 0x07c0, "VMware", "PVSCSI SCSI Controller"},
		{0x8086, 0x100e, "Intel Corporation", "82540EM Gigabit Ethernet Controller"},
	} {
		if v, d := ids.Name(tc.v, tc.d); v != tc.wantVendor || d != tc.wantDevice {
			t.Errorf("%04x:%04x = %q %q, want %q %q", tc.v, tc.d, v, d, tc.wantVendor, tc.wantDevice)
		}
	}
	if c := ids.ClassName(0x010802); c != "Non-Volatile memory controller" {
		t.Errorf("class 0108 = %q", c)
	}
}

func FuzzParsePCIIDs(f *testing.F) {
	f.Add(testPCIIDs)
	f.Add("C zz  x\n\t0\n1\n\tffff\n")
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := ParsePCIIDs(strings.NewReader(s))
		if err != nil {
			return
		}
		ids.Name(0x1000, 0x0054)
		ids.ClassName(0x010000)
	})
}

func TestMissingFirmware(t *testing.T) {
	got := MissingFirmware("junk\nqla2xxx 0000:05:00.0: Direct firmware load for ql2500_fw.bin failed with error -2\nqla2xxx 0000:05:00.0: Direct firmware load for ql2500_fw.bin failed with error -2\n")
	want := []FirmwareRequest{{Driver: "qla2xxx", Device: "0000:05:00.0", File: "ql2500_fw.bin"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
