package imaging

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/esxi-rescue/rescue/gpt"
	"golang.org/x/sys/unix"
)

// Paths of the kernel's views, variables so tests can point them elsewhere.
var (
	mountinfoPath = "/proc/self/mountinfo"
	sysDevBlock   = "/sys/dev/block"
)

// mount is one line of /proc/self/mountinfo.
type mount struct {
	dev    uint64 // st_dev of the mounted filesystem
	point  string
	source string
}

// readMounts parses mountinfo.
func readMounts() ([]mount, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	var ms []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parseMountinfoLine(sc.Text())
		if ok {
			ms = append(ms, m)
		}
	}
	return ms, sc.Err()
}

// parseMountinfoLine parses
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func parseMountinfoLine(line string) (mount, bool) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return mount{}, false
	}
	maj, mn, ok := strings.Cut(f[2], ":")
	if !ok {
		return mount{}, false
	}
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(mn, 10, 32)
	if err1 != nil || err2 != nil {
		return mount{}, false
	}
	m := mount{dev: unix.Mkdev(uint32(a), uint32(b)), point: unescapeMount(f[4])}
	for i := 6; i < len(f); i++ {
		if f[i] == "-" && i+2 < len(f) {
			m.source = unescapeMount(f[i+2])
			break
		}
	}
	return m, true
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// blockDev is a block device as sysfs sees it.
type blockDev struct {
	dev  uint64
	name string // kernel name, e.g. sda or sda1
	dir  string // its sysfs directory
}

func devString(d uint64) string { return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d)) }

// sysBlock finds the sysfs directory of a block device number.
func sysBlock(d uint64) (blockDev, error) {
	dir, err := filepath.EvalSymlinks(filepath.Join(sysDevBlock, devString(d)))
	if err != nil {
		return blockDev{}, fmt.Errorf("block device %s in sysfs: %w", devString(d), err)
	}
	return blockDev{dev: d, name: filepath.Base(dir), dir: dir}, nil
}

func readDevFile(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	maj, mn, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok {
		return 0, false
	}
	a, err1 := strconv.ParseUint(maj, 10, 32)
	c, err2 := strconv.ParseUint(mn, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return unix.Mkdev(uint32(a), uint32(c)), true
}

// wholeDisks returns the disks a device belongs to (itself when it is a disk),
// following device-mapper/md/loop slaves down to the physical disks.
func wholeDisks(d uint64, followLoop bool) []blockDev {
	b, err := sysBlock(d)
	if err != nil {
		return nil
	}
	seen := map[uint64]bool{}
	var out []blockDev
	var walk func(blockDev)
	walk = func(x blockDev) {
		if seen[x.dev] {
			return
		}
		seen[x.dev] = true
		if _, err := os.Stat(filepath.Join(x.dir, "partition")); err == nil {
			parent := filepath.Dir(x.dir)
			if pd, ok := readDevFile(filepath.Join(parent, "dev")); ok {
				walk(blockDev{dev: pd, name: filepath.Base(parent), dir: parent})
			}
			return
		}
		slaves, _ := os.ReadDir(filepath.Join(x.dir, "slaves"))
		if len(slaves) == 0 {
			out = append(out, x)
			// A loop device stands on the file behind it: the running
			// system (e.g. a squashfs root on a USB stick) is on that disk too.
			if !followLoop {
				return
			}
			if bf, err := os.ReadFile(filepath.Join(x.dir, "loop", "backing_file")); err == nil {
				var st unix.Stat_t
				if unix.Stat(strings.TrimSpace(string(bf)), &st) == nil && unix.Major(st.Dev) != 0 {
					if bb, err := sysBlock(st.Dev); err == nil {
						walk(bb)
					}
				}
			}
			return
		}
		for _, s := range slaves {
			dir, err := filepath.EvalSymlinks(filepath.Join(x.dir, "slaves", s.Name()))
			if err != nil {
				continue
			}
			if sd, ok := readDevFile(filepath.Join(dir, "dev")); ok {
				walk(blockDev{dev: sd, name: s.Name(), dir: dir})
			}
		}
	}
	walk(b)
	return out
}

// devOfPath returns the device number named by a mount source like /dev/sda1.
func devOfPath(p string) (uint64, bool) {
	if !strings.HasPrefix(p, "/") {
		return 0, false
	}
	var st unix.Stat_t
	if unix.Stat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, false
	}
	return st.Rdev, true
}

// checkTarget refuses a target that is in use (gpt.InUse: it, a partition
// of it, or for a file the loop device on it, mounted, used as swap or held
// by device-mapper/md), that lies on the disk holding the running system's
// root filesystem, or on one of the refuse devices (e.g. the boot medium).
func checkTarget(path string, isBlock bool, rdev uint64, refuse []string) error {
	problems, err := gpt.InUse(path)
	if err != nil {
		return refused("%s: cannot check whether it is in use: %v", path, err)
	}
	if isBlock {
		mine := map[uint64]string{}
		for _, w := range wholeDisks(rdev, false) {
			mine[w.dev] = w.name
		}
		mounts, err := readMounts()
		if err != nil {
			return refused("%s: cannot check whether it holds the running system: %v", path, err)
		}
		for _, m := range mounts {
			if m.point != "/" {
				continue
			}
			d := m.dev
			if sd, ok := devOfPath(m.source); ok {
				d = sd
			}
			if unix.Major(d) == 0 {
				continue // rootfs/tmpfs/overlay: a rescue system running from RAM
			}
			for _, w := range wholeDisks(d, true) {
				if name, in := mine[w.dev]; in {
					problems = append(problems, fmt.Sprintf("%s holds the running system's root filesystem", name))
				}
			}
		}
		for _, r := range refuse {
			d, ok := devOfPath(r)
			if !ok {
				return checkRefuse(refuse)
			}
			for _, w := range wholeDisks(d, true) {
				if name, in := mine[w.dev]; in {
					problems = append(problems, fmt.Sprintf("%s holds %s, which must not be written (the rescue medium)", name, r))
				}
			}
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return refused("%s is in use: %s", path, strings.Join(slices.Compact(problems), "; "))
	}
	return nil
}

// checkRefuse checks that every device to refuse is a block device: a
// misspelt -refuse must not silently protect nothing.
func checkRefuse(refuse []string) error {
	for _, r := range refuse {
		if r == "" {
			continue
		}
		if _, ok := devOfPath(r); !ok {
			why := "not a block device"
			if _, err := os.Stat(r); err != nil {
				why = err.Error()
			}
			return fmt.Errorf("-refuse %s: %s; nothing was written", r, why)
		}
	}
	return nil
}
