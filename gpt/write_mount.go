package gpt

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Where InUse looks; variables so tests can point them elsewhere.
var (
	mountinfoFile = "/proc/self/mountinfo"
	swapsFile     = "/proc/swaps"
	sysBlockDir   = "/sys/dev/block"
	sysLoopGlob   = "/sys/block/loop*/loop/backing_file"
)

// InUse reports why path (a block device or an image file) must not be
// written: any of its partitions mounted or used as swap, or the device
// held by device-mapper or md. For an image file the loop devices backed
// by it are checked the same way. An empty result means nothing was found.
func InUse(path string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("gpt: %s: %w", path, err)
	}
	var roots []string // sysfs directories of the devices to check
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		dir, err := filepath.EvalSymlinks(filepath.Join(sysBlockDir, fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))))
		if err == nil {
			roots = append(roots, dir)
		}
	case unix.S_IFREG:
		abs, _ := filepath.Abs(path)
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		files, _ := filepath.Glob(sysLoopGlob)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err == nil && strings.TrimSpace(strings.TrimSuffix(string(b), " (deleted)\n")) == abs {
				roots = append(roots, filepath.Dir(filepath.Dir(f)))
			}
		}
	}
	devs := map[string]string{} // "maj:min" -> kernel name
	var reasons []string
	var walk func(dir string)
	walk = func(dir string) {
		name := filepath.Base(dir)
		d, err := os.ReadFile(filepath.Join(dir, "dev"))
		if err != nil {
			return
		}
		id := strings.TrimSpace(string(d))
		if _, seen := devs[id]; seen {
			return
		}
		devs[id] = name
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err == nil {
				walk(filepath.Join(dir, e.Name()))
			}
		}
		holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
		for _, h := range holders {
			reasons = append(reasons, fmt.Sprintf("%s is in use by %s (device-mapper, md or similar)", name, h.Name()))
		}
	}
	for _, r := range roots {
		walk(r)
	}
	if len(devs) == 0 {
		return reasons, nil
	}
	byName := map[string]bool{}
	for _, n := range devs {
		byName["/dev/"+n] = true
	}
	if f, err := os.Open(mountinfoFile); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) < 7 {
				continue
			}
			src := ""
			for i := 6; i+2 < len(fl); i++ {
				if fl[i] == "-" {
					src = fl[i+2]
					break
				}
			}
			if n, ok := devs[fl[2]]; ok {
				reasons = append(reasons, fmt.Sprintf("%s is mounted on %s", n, fl[4]))
			} else if byName[src] {
				reasons = append(reasons, fmt.Sprintf("%s is mounted on %s", strings.TrimPrefix(src, "/dev/"), fl[4]))
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile(swapsFile); err == nil {
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if fl := strings.Fields(l); len(fl) > 0 && byName[fl[0]] {
				reasons = append(reasons, fmt.Sprintf("%s is in use as swap", strings.TrimPrefix(fl[0], "/dev/")))
			}
		}
	}
	return reasons, nil
}

// RereadPartitions asks the kernel to read dev's partition table again
// (BLKRRPART), so that /dev/sdaN match the table just written. It does
// nothing for image files. It fails (EBUSY) while a partition is in use;
// the kernel then keeps the old view until the next boot.
func RereadPartitions(dev *Device) error {
	if !dev.IsBlock {
		return nil
	}
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("gpt: asking the kernel to re-read the partition table of %s: %w", dev.Name(), err)
	}
	return nil
}
