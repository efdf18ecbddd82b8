package system

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
	"golang.org/x/sys/unix"
)

// Reread makes the kernel read the partition table of the block device
// dev again (BLKRRPART) after its GPT was written, and waits (bounded)
// until the kernel's partitions are the table's used slots: otherwise
// /dev/sda5 still names whatever slot 5 held before the fix, and esxiboot,
// which mounts partitions 5 and 6 by number, finds the wrong ones. Regular
// files (tests) are left alone.
func Reread(dev string, timeout time.Duration) error {
	st, err := os.Stat(dev)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return nil
	}
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("asking the kernel to re-read the partition table of %s (BLKRRPART): %w (a partition in use?)", dev, err)
	}
	t, err := gpt.ReadFile(dev, 0)
	if err != nil {
		return err
	}
	want := map[int]bool{}
	for _, s := range t.Slots() {
		if s.Used() {
			want[s.Index] = true
		}
	}
	name := filepath.Base(dev)
	deadline := time.Now().Add(timeout)
	for {
		have := kernelPartitions(name)
		if sameSet(have, want) {
			for n := range want {
				if _, err := os.Stat(partNode(dev, n)); err != nil {
					goto wait
				}
			}
			return nil
		}
	wait:
		if time.Now().After(deadline) {
			return fmt.Errorf("after re-reading, the kernel shows partitions %v of %s, the GPT has %v", keys(have), dev, keys(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kernelPartitions lists the partition numbers the kernel has for disk.
func kernelPartitions(disk string) map[int]bool {
	out := map[int]bool{}
	ents, _ := os.ReadDir(filepath.Join("/sys/block", disk))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", disk, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			out[n] = true
		}
	}
	return out
}

// partNode is the device node of partition n of dev: /dev/sda5,
// /dev/nvme0n1p5.
func partNode(dev string, n int) string {
	if last := dev[len(dev)-1]; last >= '0' && last <= '9' {
		return fmt.Sprintf("%sp%d", dev, n)
	}
	return fmt.Sprintf("%s%d", dev, n)
}

func sameSet(a, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func keys(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
