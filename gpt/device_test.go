package gpt_test

import (
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// attachLoop attaches path read-only to a free loop device with logical
// sector size ss and detaches it when the test ends. When that is not
// possible here (not root, no loop devices in a container) it returns ""
// and why.
func attachLoop(t *testing.T, path string, ss int) (dev, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return "", "loop devices need root"
	}
	out, err := exec.Command("losetup", "--show", "-f", "-r", "--sector-size", strconv.Itoa(ss), path).CombinedOutput()
	if err != nil {
		return "", fmt.Sprintf("no loop device available: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev, ""
}

// loopDevice is attachLoop that skips the test when no loop device can
// be had.
func loopDevice(t *testing.T, path string, ss int) string {
	t.Helper()
	dev, why := attachLoop(t, path, ss)
	if dev == "" {
		t.Skip(why)
	}
	return dev
}

// TestOpenDevice reads tables through a block device: sector size and
// size come from the kernel, and the table equals the one read from the
// image file.
func TestOpenDevice(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		t.Run(strconv.Itoa(ss), func(t *testing.T) {
			const size = 12 * gib
			parts := esxiLayout(t, "6.7", size, ss)
			dir := t.TempDir()
			var img string
			if ss == 512 {
				img = gpttest.SgdiskImage(t, dir, size, parts)
			} else {
				img = gpttest.Sparse(t, dir, "4k.img", size)
				gpttest.NewTable(t, ss, size, parts).Write(t, img)
			}
			dev := loopDevice(t, img, ss)
			d, err := gpt.OpenDevice(dev, 0, false)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if !d.IsBlock || d.SectorSize != ss || d.Size != size {
				t.Fatalf("device: block %v sector %d size %d", d.IsBlock, d.SectorSize, d.Size)
			}
			dt, err := d.ReadTable()
			if err != nil {
				t.Fatal(err)
			}
			it := readFile(t, img, ss)
			if !reflect.DeepEqual(dt, it) {
				t.Error("the device's table differs from the image's")
			}
			checkSlots(t, dt, parts)
			// sgdisk reads a 4Kn table through the device (it cannot from
			// a file): the independent encoder's 4K fixture checked by it.
			sg := gpttest.SgdiskList(t, dev)
			used := 0
			for _, s := range dt.Slots() {
				if !s.Used() {
					continue
				}
				e := s.Entry()
				if used >= len(sg) || sg[used].Num != s.Index || sg[used].First != e.First || sg[used].Last != e.Last {
					t.Errorf("sgdisk -p %s disagrees at slot %d: %+v", dev, s.Index, sg)
				}
				used++
			}
			if used != len(sg) {
				t.Errorf("sgdisk lists %d partitions, we %d", len(sg), used)
			}
			if out := gpttest.Run(t, "sgdisk", "-v", dev); !strings.Contains(out, "No problems found") {
				t.Errorf("sgdisk -v %s:\n%s", dev, out)
			}
			other := 4096
			if ss == 4096 {
				other = 512
			}
			if _, err := gpt.OpenDevice(dev, other, false); err == nil || !strings.Contains(err.Error(), "sectors") {
				t.Errorf("wrong sector size accepted: %v", err)
			}
			if rt, err := gpt.LoadReference(dev, 0); err != nil || !reflect.DeepEqual(rt, it) {
				t.Errorf("LoadReference(%s): %v", dev, err)
			}
			if k, _ := gpt.DetectKind(dev); k != gpt.KindDevice {
				t.Errorf("kind %q", k)
			}
		})
	}
	if _, err := gpt.OpenDevice("/dev/null", 0, false); err == nil {
		t.Error("character device accepted")
	}
}

// TestSgdiskBackup4KReal: a real `sgdisk --backup` of a 4Kn disk (made
// through a 4096-byte loop device) is in 512-byte blocks like any other;
// its sector size is inferred and it matches the disk.
func TestSgdiskBackup4KReal(t *testing.T) {
	const size = 12 * gib
	parts := esxiLayout(t, "7.0", size, 4096)
	dir := t.TempDir()
	img := gpttest.Sparse(t, dir, "4k.img", size)
	gpttest.NewTable(t, 4096, size, parts).Write(t, img)
	dev := loopDevice(t, img, 4096)
	bak := dir + "/4k.sgdisk"
	gpttest.Run(t, "sgdisk", "-b", bak, dev)
	if fi, err := os.Stat(bak); err != nil || fi.Size() != 3*512+128*128 {
		t.Fatalf("sgdisk backup: %v %v", fi, err)
	}
	bt, err := gpt.LoadReference(bak, 0)
	if err != nil {
		t.Fatal(err)
	}
	it := readFile(t, img, 4096)
	if d := gpt.Compare(it, bt); bt.SectorSize != 4096 || bt.DiskSize != size || !d.Same() || !d.Identical {
		t.Errorf("sector %d size %d: %s", bt.SectorSize, bt.DiskSize, d.Verdict)
	}
}
