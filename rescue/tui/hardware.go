package tui

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// pciKinds names the PCI base classes the rescue system needs drivers for.
var pciKinds = map[string]string{"0x01": "storage controller", "0x02": "network controller"}

// Missing lists the PCI storage and network controllers that no driver
// claimed (sysfs: no device/driver link), e.g. "storage controller
// 0000:03:00.0 (vendor 0x1000 device 0x005d): no driver loaded".
func Missing(root string) []string {
	devs, _ := filepath.Glob(filepath.Join(root, "sys/bus/pci/devices/*"))
	var out []string
	for _, d := range devs {
		class := readTrim(filepath.Join(d, "class"))
		if len(class) < 4 {
			continue
		}
		kind, ok := pciKinds[class[:4]]
		if !ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "driver")); err == nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s (vendor %s device %s): no driver loaded", kind, filepath.Base(d),
			readTrim(filepath.Join(d, "vendor")), readTrim(filepath.Join(d, "device"))))
	}
	sort.Strings(out)
	return out
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
