package inventory

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PCIDevice is one PCI controller that matters for a rescue: storage,
// network, Fibre Channel, USB and SD host controllers.
type PCIDevice struct {
	Addr      string `json:"addr"`   // 0000:00:04.0
	Vendor    string `json:"vendor"` // "1000" (hex, as lspci -n shows it)
	Device    string `json:"device"` // "0054"
	Class     string `json:"class"`  // "010000"
	ClassName string `json:"class_name,omitempty"`
	Name      string `json:"name,omitempty"`   // vendor and device from pci.ids
	Driver    string `json:"driver,omitempty"` // the driver bound to it
	// Modules are the image's modules whose aliases match the device.
	Modules []string `json:"modules,omitempty"`
	// FirmwareMissing are firmware files its driver asked for and the
	// image does not have (kernel log, firmware fallback in sysfs).
	FirmwareMissing []string `json:"firmware_missing,omitempty"`
}

// Status says in words whether the device works: its driver, "no driver
// in this image", or a driver that is there but did not bind.
func (d PCIDevice) Status() string {
	var s string
	switch {
	case d.Driver != "":
		s = "driver " + d.Driver
	case len(d.Modules) == 0:
		s = "no driver in this image"
	default:
		s = "not bound (the image's " + strings.Join(d.Modules, ", ") + " did not take it; see dmesg)"
	}
	if len(d.FirmwareMissing) > 0 {
		s += "; firmware missing: " + strings.Join(d.FirmwareMissing, " ")
	}
	return s
}

// String is the report line: "0000:00:04.0 [1000:0054] SCSI storage
// controller: Broadcom / LSI SAS1068 PCI-X Fusion-MPT SAS — driver mptsas".
func (d PCIDevice) String() string {
	s := fmt.Sprintf("%s [%s:%s]", d.Addr, d.Vendor, d.Device)
	if d.ClassName != "" {
		s += " " + d.ClassName + ":"
	} else {
		s += " class " + d.Class + ":"
	}
	if d.Name != "" {
		s += " " + d.Name
	} else {
		s += " (unknown device)"
	}
	return s + " — " + d.Status()
}

// rescueClass says whether a PCI class code is one the report lists:
// mass storage (01), network (02), Fibre Channel (0c04), USB (0c03, the
// rescue stick and ESXi on a stick) and SD host controllers (0805).
func rescueClass(class uint32) bool {
	switch base, sub := class>>16, class>>8&0xff; {
	case base == 0x01, base == 0x02:
		return true
	case base == 0x0c && (sub == 0x03 || sub == 0x04):
		return true
	case base == 0x08 && sub == 0x05:
		return true
	}
	return false
}

// FirmwareRequest is a firmware file a driver asked for and did not get.
type FirmwareRequest struct {
	Driver string `json:"driver"` // as the kernel log names it: bnx2x, r8152, ...
	Device string `json:"device"` // 0000:03:00.0, 2-1:1.0
	File   string `json:"file"`   // bnx2x/bnx2x-e2-7.13.21.0.fw
}

// reFirmwareFailed matches the kernel's message for a firmware file that
// is not in /lib/firmware (drivers/base/firmware_loader):
// "bnx2x 0000:03:00.0: Direct firmware load for bnx2x/x.fw failed with error -2".
var reFirmwareFailed = regexp.MustCompile(`(?m)(\S+) (\S+): Direct firmware load for (\S+) failed with error -?\d+`)

// MissingFirmware returns the firmware requests that failed, from kernel
// log text (dmesg; syslog prefixes and time stamps are fine), once each.
func MissingFirmware(klog string) []FirmwareRequest {
	var out []FirmwareRequest
	seen := map[FirmwareRequest]bool{}
	for _, m := range reFirmwareFailed.FindAllStringSubmatch(klog, -1) {
		r := FirmwareRequest{Driver: m[1], Device: m[2], File: m[3]}
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// FallbackFirmware returns the requests waiting in the firmware loader's
// sysfs fallback (sys/class/firmware/<file with / as !>/, its device
// link naming the device): no file in /lib/firmware answered them.
func (s Sys) FallbackFirmware() []FirmwareRequest {
	ents, _ := os.ReadDir(s.p("sys/class/firmware"))
	var out []FirmwareRequest
	for _, e := range ents {
		if e.Name() == "timeout" {
			continue
		}
		r := FirmwareRequest{File: strings.ReplaceAll(e.Name(), "!", "/")}
		dir := s.p("sys/class/firmware", e.Name())
		if dev, err := filepath.EvalSymlinks(filepath.Join(dir, "device")); err == nil {
			r.Device = filepath.Base(dev)
			if drv, err := os.Readlink(filepath.Join(dev, "driver")); err == nil {
				r.Driver = filepath.Base(drv)
			}
		}
		out = append(out, r)
	}
	return out
}

// PCIDevices lists the rescue-relevant PCI controllers (see rescueClass)
// from sys/bus/pci/devices, sorted by address, with their names from ids
// (may be nil), the bound driver, the image's modules that claim them
// (claim may be nil: none known) and the firmware their drivers asked for
// in vain (fw, matched by device address).
func (s Sys) PCIDevices(ids *PCIIDs, claim func(modalias string) []string, fw []FirmwareRequest) ([]PCIDevice, error) {
	dir := s.p("sys/bus/pci/devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing PCI devices: %w", err)
	}
	var out []PCIDevice
	for _, e := range ents {
		b := filepath.Join(dir, e.Name())
		class, err := strconv.ParseUint(strings.TrimPrefix(readTrim(filepath.Join(b, "class")), "0x"), 16, 32)
		if err != nil || !rescueClass(uint32(class)) {
			continue
		}
		vid, err1 := strconv.ParseUint(strings.TrimPrefix(readTrim(filepath.Join(b, "vendor")), "0x"), 16, 16)
		did, err2 := strconv.ParseUint(strings.TrimPrefix(readTrim(filepath.Join(b, "device")), "0x"), 16, 16)
		if err1 != nil || err2 != nil {
			continue
		}
		d := PCIDevice{Addr: e.Name(), Vendor: fmt.Sprintf("%04x", vid), Device: fmt.Sprintf("%04x", did),
			Class: fmt.Sprintf("%06x", class), ClassName: ids.ClassName(uint32(class))}
		vn, dn := ids.Name(uint16(vid), uint16(did))
		d.Name = strings.TrimSpace(vn + " " + dn)
		if drv, err := os.Readlink(filepath.Join(b, "driver")); err == nil {
			d.Driver = filepath.Base(drv)
		}
		if claim != nil {
			if ma := readTrim(filepath.Join(b, "modalias")); ma != "" {
				d.Modules = claim(ma)
			}
		}
		for _, r := range fw {
			if r.Device == d.Addr && !contains(d.FirmwareMissing, r.File) {
				d.FirmwareMissing = append(d.FirmwareMissing, r.File)
			}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Hardware is the hardware report: the PCI controllers, and firmware
// requests that belong to no listed PCI device (USB NICs, ...).
type Hardware struct {
	PCI []PCIDevice `json:"pci"`
	// OtherFirmwareMissing are failed firmware requests of devices that
	// are not in PCI (per driver, e.g. r8152 on a USB adapter).
	OtherFirmwareMissing []FirmwareRequest `json:"other_firmware_missing,omitempty"`
}

// HardwareReport builds the report from sysfs, pci.ids (nil: no names),
// claim (the image's modalias lookup) and the kernel log text.
func (s Sys) HardwareReport(ids *PCIIDs, claim func(string) []string, klog string) (*Hardware, error) {
	fw := append(MissingFirmware(klog), s.FallbackFirmware()...)
	pci, err := s.PCIDevices(ids, claim, fw)
	if err != nil {
		return nil, err
	}
	h := &Hardware{PCI: pci}
	listed := map[string]bool{}
	for _, d := range pci {
		listed[d.Addr] = true
	}
	for _, r := range fw {
		if !listed[r.Device] {
			h.OtherFirmwareMissing = append(h.OtherFirmwareMissing, r)
		}
	}
	return h, nil
}

// Lines is the report as console lines, one a device.
func (h *Hardware) Lines() []string {
	var out []string
	for _, d := range h.PCI {
		out = append(out, d.String())
	}
	for _, r := range h.OtherFirmwareMissing {
		out = append(out, fmt.Sprintf("%s %s: firmware missing: %s", r.Driver, r.Device, r.File))
	}
	return out
}

// KernelLog returns the kernel's log buffer (what dmesg prints), for
// MissingFirmware.
func KernelLog() (string, error) {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		return "", fmt.Errorf("kernel log: %w", err)
	}
	buf := make([]byte, n)
	m, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return "", fmt.Errorf("kernel log: %w", err)
	}
	return string(buf[:m]), nil
}
