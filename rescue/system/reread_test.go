package system

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/esxi"
)

func TestPartNode(t *testing.T) {
	for dev, want := range map[string]string{
		"/dev/sda": "/dev/sda5", "/dev/vda": "/dev/vda5", "/dev/nvme0n1": "/dev/nvme0n1p5",
		"/dev/mmcblk0": "/dev/mmcblk0p5", "/dev/loop3": "/dev/loop3p5",
	} {
		if got := partNode(dev, 5); got != want {
			t.Errorf("partNode(%s, 5) = %s, want %s", dev, got, want)
		}
	}
}

// TestFixRereadsPartitions fixes a compacted ESXi disk on a loop device
// and checks that the kernel's partitions are the fixed table's, which is
// what esxiboot mounts by number. Needs root (losetup).
func TestFixRereadsPartitions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	dir := t.TempDir()
	pristine := filepath.Join(dir, "pristine.img")
	if err := esxi.Create(pristine, esxi.CreateOptions{Version: "5.0", Size: gib, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	compacted(t, pristine, disk)
	out, err := exec.Command("losetup", "--find", "--show", "--partscan", disk).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device here: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	name := filepath.Base(loop)
	waitFor := func(want []int) bool {
		for i := 0; i < 50; i++ {
			if fmt.Sprint(keys(kernelPartitions(name))) == fmt.Sprint(want) {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false
	}
	if !waitFor([]int{1, 2, 3, 4, 5}) {
		if len(kernelPartitions(name)) == 0 {
			t.Skipf("this kernel shows no partitions of %s (no GPT partition support here)", loop)
		}
		t.Fatalf("before the fix the kernel shows %v, want the compacted 1-5", keys(kernelPartitions(name)))
	}
	c := parse(t, "rescue.action=fix rescue.target="+loop)
	s, log := newSystem(t)
	if _, err := s.Reference(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fix(context.Background(), c, loop); err != nil {
		t.Fatalf("Fix: %v\n%s", err, log)
	}
	if got := keys(kernelPartitions(name)); fmt.Sprint(got) != fmt.Sprint([]int{1, 5, 6, 7, 8}) {
		t.Errorf("after the fix the kernel shows partitions %v, want [1 5 6 7 8]", got)
	}
	// Partition 5 is the boot bank again: its size is the bank's.
	b, _ := os.ReadFile(filepath.Join("/sys/block", name, name+"p5", "size"))
	if strings.TrimSpace(string(b)) != "511968" {
		t.Errorf("kernel partition 5 has %s sectors, want the boot bank's 511968", b)
	}
}
