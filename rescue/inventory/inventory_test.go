package inventory

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, root, p, v string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fakeDisk(t *testing.T, root, name string, sectors string, parts ...string) {
	b := "sys/block/" + name
	write(t, root, b+"/size", sectors)
	write(t, root, b+"/dev", "8:0")
	write(t, root, b+"/removable", "0")
	write(t, root, b+"/ro", "0")
	write(t, root, b+"/queue/logical_block_size", "512")
	for i, p := range parts {
		write(t, root, b+"/"+p+"/partition", "1")
		write(t, root, b+"/"+p+"/dev", "8:"+string(rune('1'+i)))
	}
}

func TestDisks(t *testing.T) {
	root := t.TempDir()
	fakeDisk(t, root, "sda", "83886080", "sda1", "sda2")
	write(t, root, "sys/block/sda/device/model", "PERC H730P Mini  ")
	write(t, root, "sys/block/sda/device/vendor", "DELL")
	write(t, root, "sys/block/sda/device/wwid", "naa.6d0946606f3c4f002a6e1d8f0b5b5b5b")
	fakeDisk(t, root, "nvme0n1", "7814037168")
	write(t, root, "sys/block/nvme0n1/dev", "259:0")
	write(t, root, "sys/block/nvme0n1/queue/logical_block_size", "4096")
	write(t, root, "sys/block/nvme0n1/device/serial", "S4EVNF0M123456")
	write(t, root, "sys/block/nvme0n1/wwid", "eui.0025388b91b3c9a1")
	fakeDisk(t, root, "sdb", "15728640", "sdb1")
	write(t, root, "sys/block/sdb/removable", "1")
	write(t, root, "sys/block/sdb/dev", "8:16")
	write(t, root, "sys/block/sdb/sdb1/dev", "8:17")
	fakeDisk(t, root, "loop0", "1000")
	fakeDisk(t, root, "sr0", "1000")
	fakeDisk(t, root, "sdc", "0") // empty card reader
	write(t, root, "proc/self/mountinfo", "22 1 0:21 / / rw - rootfs rootfs rw\n30 22 8:17 / /mnt/stick ro - vfat /dev/sdb1 ro\n")

	disks, err := Sys{Root: root}.Disks()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range disks {
		names = append(names, d.Name)
	}
	if !reflect.DeepEqual(names, []string{"nvme0n1", "sda", "sdb"}) {
		t.Fatalf("disks %v", names)
	}
	nv, sda, sdb := disks[0], disks[1], disks[2]
	if nv.Size != 7814037168*512 || nv.SectorSize != 4096 || nv.Serial != "S4EVNF0M123456" || nv.WWID != "eui.0025388b91b3c9a1" {
		t.Errorf("nvme %+v", nv)
	}
	if sda.Model != "PERC H730P Mini" || sda.Vendor != "DELL" || !reflect.DeepEqual(sda.Partitions, []string{"sda1", "sda2"}) || len(sda.Mounted) != 0 {
		t.Errorf("sda %+v", sda)
	}
	if !sdb.Removable || !reflect.DeepEqual(sdb.Mounted, []string{"/mnt/stick"}) {
		t.Errorf("sdb %+v", sdb)
	}
	if got := sda.Describe(); got != "/dev/sda 40.0 GiB DELL PERC H730P Mini" {
		t.Errorf("Describe = %q", got)
	}
	if got := (Disk{Path: "/dev/vda", Size: 3 << 30, Vendor: "0x1af4"}).Describe(); got != "/dev/vda 3.0 GiB" {
		t.Errorf("Describe of a virtio disk = %q", got)
	}
}

func TestNICs(t *testing.T) {
	root := t.TempDir()
	write(t, root, "sys/class/net/lo/type", "772")
	write(t, root, "sys/class/net/eth0/type", "1")
	write(t, root, "sys/class/net/eth0/address", "52:54:00:12:34:56")
	write(t, root, "sys/class/net/eth0/operstate", "up")
	write(t, root, "sys/class/net/eth0/carrier", "1")
	write(t, root, "sys/class/net/eth0/speed", "1000")
	os.MkdirAll(filepath.Join(root, "sys/bus/pci/drivers/e1000e"), 0o755)
	os.MkdirAll(filepath.Join(root, "sys/class/net/eth0/device"), 0o755)
	os.Symlink(filepath.Join(root, "sys/bus/pci/drivers/e1000e"), filepath.Join(root, "sys/class/net/eth0/device/driver"))
	write(t, root, "sys/class/net/eth1/type", "1")
	write(t, root, "sys/class/net/eth1/address", "52:54:00:12:34:57")
	write(t, root, "sys/class/net/eth1/operstate", "down")
	os.MkdirAll(filepath.Join(root, "sys/class/net/eth1/device"), 0o755)
	write(t, root, "sys/class/net/ifb0/type", "1")
	write(t, root, "sys/class/net/ifb0/address", "9e:ad:e9:e2:18:80")
	nics, err := Sys{Root: root}.NICs()
	if err != nil {
		t.Fatal(err)
	}
	want := []NIC{
		{Name: "eth0", MAC: "52:54:00:12:34:56", Link: "up", Carrier: true, Driver: "e1000e", Speed: 1000},
		{Name: "eth1", MAC: "52:54:00:12:34:57", Link: "down"},
	}
	if !reflect.DeepEqual(nics, want) {
		t.Errorf("NICs = %+v, want %+v", nics, want)
	}
}

func TestWaitDisks(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sys/block"), 0o755)
	go func() {
		time.Sleep(300 * time.Millisecond)
		fakeDisk(t, root, "vda", "2048")
	}()
	s := Sys{Root: root}
	start := time.Now()
	disks, err := s.WaitDisks(context.Background(), 1, 200*time.Millisecond, 5*time.Second)
	if err != nil || len(disks) != 1 || disks[0].Name != "vda" {
		t.Fatalf("WaitDisks = %+v, %v", disks, err)
	}
	if d := time.Since(start); d < 500*time.Millisecond || d > 3*time.Second {
		t.Errorf("WaitDisks took %v, want about 0.5s", d)
	}
	// Bounded when nothing comes.
	start = time.Now()
	disks, _ = s.WaitDisks(context.Background(), 5, 100*time.Millisecond, 400*time.Millisecond)
	if len(disks) != 1 || time.Since(start) > 2*time.Second {
		t.Errorf("WaitDisks(min 5) = %d disks after %v", len(disks), time.Since(start))
	}
}

// TestDisksAgainstLsblk cross-checks the real machine's disks with
// util-linux lsblk.
func TestDisksAgainstLsblk(t *testing.T) {
	lsblk, err := exec.LookPath("lsblk")
	if err != nil {
		t.Fatal("lsblk (Debian package util-linux) not installed")
	}
	out, err := exec.Command(lsblk, "-J", "-b", "-d", "-o", "NAME,SIZE,LOG-SEC,TYPE").Output()
	if err != nil {
		t.Skipf("lsblk cannot list block devices here: %v", err)
	}
	var l struct {
		Blockdevices []struct {
			Name   string `json:"name"`
			Size   any    `json:"size"`
			LogSec any    `json:"log-sec"`
			Type   string `json:"type"`
		} `json:"blockdevices"`
	}
	if err := json.Unmarshal(out, &l); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, b := range l.Blockdevices {
		if b.Type == "disk" && !skipDisk(b.Name) && toStr(b.Size) != "0" {
			want[b.Name] = toStr(b.Size) + "/" + toStr(b.LogSec)
		}
	}
	disks, err := Sys{Root: "/"}.Disks()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range disks {
		got[d.Name] = toStr(d.Size) + "/" + toStr(d.SectorSize)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Disks = %v, lsblk says %v", got, want)
	}
	t.Logf("%d disks agree with lsblk", len(got))
}

func toStr(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}
