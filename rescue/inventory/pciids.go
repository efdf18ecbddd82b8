package inventory

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// PCIIDsFile is where the image keeps Debian's pci.ids (package pci.ids).
const PCIIDsFile = "usr/share/misc/pci.ids"

// PCIIDs holds the vendor, device and class names of a pci.ids file (the
// PCI ID Repository's format, also what lspci reads).
type PCIIDs struct {
	vendors map[uint16]string
	devices map[uint32]string // vendor<<16 | device
	classes map[uint16]string // class<<8 | subclass; subclass 0xff... see className
	bases   map[uint8]string
}

// ParsePCIIDs reads a pci.ids file: "vvvv  Vendor" lines, "\tdddd  Device"
// lines under them, subsystem lines ("\t\t...", skipped) and the class
// section ("C cc  Class", "\tss  Subclass"). Malformed lines are skipped,
// as lspci does; only a read error fails.
func ParsePCIIDs(r io.Reader) (*PCIIDs, error) {
	ids := &PCIIDs{vendors: map[uint16]string{}, devices: map[uint32]string{}, classes: map[uint16]string{}, bases: map[uint8]string{}}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	var vendor int = -1 // current vendor, -1 outside a vendor
	var class int = -1  // current class in the C section
	for s.Scan() {
		l := s.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		switch {
		case strings.HasPrefix(l, "C "):
			vendor = -1
			id, name, ok := hexName(l[2:], 2)
			if !ok {
				class = -1
				continue
			}
			class = int(id)
			ids.bases[uint8(id)] = name
		case l[0] != '\t':
			class = -1
			id, name, ok := hexName(l, 4)
			if !ok {
				vendor = -1 // another section (device types, languages, ...)
				continue
			}
			vendor = int(id)
			ids.vendors[uint16(id)] = name
		case strings.HasPrefix(l, "\t\t"):
			// subsystem or programming interface: not needed
		case vendor >= 0:
			if id, name, ok := hexName(l[1:], 4); ok {
				ids.devices[uint32(vendor)<<16|uint32(id)] = name
			}
		case class >= 0:
			if id, name, ok := hexName(l[1:], 2); ok {
				ids.classes[uint16(class)<<8|uint16(id)] = name
			}
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading pci.ids: %w", err)
	}
	return ids, nil
}

// hexName splits "hhhh  name" with n hex digits.
func hexName(l string, n int) (uint64, string, bool) {
	if len(l) < n+2 || l[n] != ' ' {
		return 0, "", false
	}
	id, err := strconv.ParseUint(l[:n], 16, 16)
	if err != nil {
		return 0, "", false
	}
	name := strings.TrimSpace(l[n:])
	return id, name, name != ""
}

// LoadPCIIDs reads root/usr/share/misc/pci.ids.
func LoadPCIIDs(root string) (*PCIIDs, error) {
	f, err := os.Open(root + "/" + PCIIDsFile)
	if err != nil {
		return nil, fmt.Errorf("PCI names: %w", err)
	}
	defer f.Close()
	return ParsePCIIDs(f)
}

// Name returns "Vendor Device" for the IDs ("" parts when unknown; a nil
// *PCIIDs knows nothing).
func (ids *PCIIDs) Name(vendor, device uint16) (vendorName, deviceName string) {
	if ids == nil {
		return "", ""
	}
	return ids.vendors[vendor], ids.devices[uint32(vendor)<<16|uint32(device)]
}

// ClassName returns the subclass name of a 24-bit PCI class code
// ("RAID bus controller"), else the base class's ("Mass storage
// controller"), else "".
func (ids *PCIIDs) ClassName(class uint32) string {
	if ids == nil {
		return ""
	}
	if n := ids.classes[uint16(class>>8)]; n != "" {
		return n
	}
	return ids.bases[uint8(class>>16)]
}
