// Package inventory lists the machine's disks and network interfaces from
// sysfs — size, model, serial, WWID, whether anything on a disk is
// mounted; MAC address and link state — and waits a bounded time for
// disks to appear after their drivers load.
package inventory

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Disk is one whole block device.
type Disk struct {
	Name       string   `json:"name"` // sda, nvme0n1, vda
	Path       string   `json:"path"` // /dev/sda
	Size       int64    `json:"size"` // bytes
	SectorSize int      `json:"sector_size"`
	Model      string   `json:"model,omitempty"`
	Vendor     string   `json:"vendor,omitempty"`
	Serial     string   `json:"serial,omitempty"`
	WWID       string   `json:"wwid,omitempty"`
	Removable  bool     `json:"removable"`
	ReadOnly   bool     `json:"read_only"`
	Dev        string   `json:"dev"`                  // major:minor
	Partitions []string `json:"partitions,omitempty"` // sda1, sda2 ...
	Mounted    []string `json:"mounted,omitempty"`    // mount points of the disk or its partitions
}

// Describe is a one-line summary: "/dev/sda 40.0 GiB QEMU HARDDISK serial QM0001".
func (d Disk) Describe() string {
	s := fmt.Sprintf("%s %s", d.Path, HumanSize(d.Size))
	vendor := d.Vendor
	if strings.HasPrefix(vendor, "0x") {
		vendor = "" // virtio: the PCI vendor ID, not a name
	}
	if m := strings.TrimSpace(vendor + " " + d.Model); m != "" {
		s += " " + m
	}
	if d.Serial != "" {
		s += " serial " + d.Serial
	}
	if d.SectorSize != 512 && d.SectorSize != 0 {
		s += fmt.Sprintf(" (%d-byte sectors)", d.SectorSize)
	}
	if d.Removable {
		s += " removable"
	}
	if len(d.Mounted) > 0 {
		s += " mounted on " + strings.Join(d.Mounted, ",")
	}
	return s
}

// HumanSize formats bytes with binary units.
func HumanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Sys says where sysfs and procfs are (a test points them at a fake tree).
type Sys struct {
	Root string // "/" normally
}

func (s Sys) p(parts ...string) string {
	return filepath.Join(append([]string{s.Root}, parts...)...)
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// skipDisk tells which block devices are not disks a server boots from.
func skipDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "mtdblock"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Disks lists whole disks (no loop, RAM, CD-ROM or device-mapper
// devices; no empty drives), sorted by name.
func (s Sys) Disks() ([]Disk, error) {
	ents, err := os.ReadDir(s.p("sys/block"))
	if err != nil {
		return nil, fmt.Errorf("listing disks: %w", err)
	}
	mounts := s.mountedDevs()
	var out []Disk
	for _, e := range ents {
		name := e.Name()
		if skipDisk(name) {
			continue
		}
		b := s.p("sys/block", name)
		sectors, _ := strconv.ParseInt(readTrim(filepath.Join(b, "size")), 10, 64)
		if sectors == 0 {
			continue // card reader without a card, offline drive
		}
		d := Disk{Name: name, Path: "/dev/" + name, Size: sectors * 512, SectorSize: 512,
			Dev: readTrim(filepath.Join(b, "dev"))}
		if ss, err := strconv.Atoi(readTrim(filepath.Join(b, "queue/logical_block_size"))); err == nil && ss > 0 {
			d.SectorSize = ss
		}
		d.Model = readTrim(filepath.Join(b, "device/model"))
		d.Vendor = readTrim(filepath.Join(b, "device/vendor"))
		d.Serial = firstOf(filepath.Join(b, "device/serial"), filepath.Join(b, "serial"))
		d.WWID = firstOf(filepath.Join(b, "device/wwid"), filepath.Join(b, "wwid"))
		d.Removable = readTrim(filepath.Join(b, "removable")) == "1"
		d.ReadOnly = readTrim(filepath.Join(b, "ro")) == "1"
		if m := mounts[d.Dev]; m != "" {
			d.Mounted = append(d.Mounted, m)
		}
		parts, _ := os.ReadDir(b)
		for _, p := range parts {
			if _, err := os.Stat(filepath.Join(b, p.Name(), "partition")); err != nil {
				continue
			}
			d.Partitions = append(d.Partitions, p.Name())
			if m := mounts[readTrim(filepath.Join(b, p.Name(), "dev"))]; m != "" {
				d.Mounted = append(d.Mounted, m)
			}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func firstOf(paths ...string) string {
	for _, p := range paths {
		if v := readTrim(p); v != "" {
			return v
		}
	}
	return ""
}

// mountedDevs maps major:minor to a mount point, from mountinfo.
func (s Sys) mountedDevs() map[string]string {
	m := map[string]string{}
	f, err := os.Open(s.p("proc/self/mountinfo"))
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fl := strings.Fields(sc.Text())
		if len(fl) >= 5 && !strings.HasPrefix(fl[2], "0:") {
			if _, ok := m[fl[2]]; !ok {
				m[fl[2]] = fl[4]
			}
		}
	}
	return m
}

// NIC is one network interface.
type NIC struct {
	Name    string `json:"name"`
	MAC     string `json:"mac"`
	Link    string `json:"link"`             // operstate: up, down, unknown, ...
	Carrier bool   `json:"carrier"`          // cable plugged and link negotiated (only when the interface is up)
	Driver  string `json:"driver,omitempty"` // e.g. e1000e
	Speed   int    `json:"speed_mbps,omitempty"`
}

// NICs lists Ethernet interfaces backed by a device (not loopback,
// bridges, bonds, veth or ifb), sorted by name.
func (s Sys) NICs() ([]NIC, error) {
	ents, err := os.ReadDir(s.p("sys/class/net"))
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var out []NIC
	for _, e := range ents {
		b := s.p("sys/class/net", e.Name())
		if readTrim(filepath.Join(b, "type")) != "1" || e.Name() == "lo" {
			continue
		}
		if _, err := os.Stat(filepath.Join(b, "device")); err != nil {
			continue // virtual: bridge, bond, veth, ifb
		}
		n := NIC{Name: e.Name(), MAC: readTrim(filepath.Join(b, "address")), Link: readTrim(filepath.Join(b, "operstate"))}
		n.Carrier = readTrim(filepath.Join(b, "carrier")) == "1"
		if drv, err := os.Readlink(filepath.Join(b, "device/driver")); err == nil {
			n.Driver = filepath.Base(drv)
		}
		if sp, err := strconv.Atoi(readTrim(filepath.Join(b, "speed"))); err == nil && sp > 0 {
			n.Speed = sp
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// WaitDisks polls until the set of disks has not changed for settle and
// at least min disks exist, or until timeout. It returns the last list;
// err is non-nil only when sysfs cannot be read. Disks appear
// asynchronously after their driver loads, so one look is not enough.
func (s Sys) WaitDisks(ctx context.Context, min int, settle, timeout time.Duration) ([]Disk, error) {
	deadline := time.Now().Add(timeout)
	var last []Disk
	lastKey := ""
	stableSince := time.Now()
	for {
		disks, err := s.Disks()
		if err != nil {
			return nil, err
		}
		key := ""
		for _, d := range disks {
			key += d.Name + fmt.Sprint(d.Size, len(d.Partitions)) + ","
		}
		if key != lastKey {
			lastKey, last, stableSince = key, disks, time.Now()
		}
		if len(last) >= min && time.Since(stableSince) >= settle {
			return last, nil
		}
		if time.Now().After(deadline) {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}
