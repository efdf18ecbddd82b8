// Package keep saves what a rescue run must not lose — undo files, the
// console log, the report — onto the rescue USB stick, so that they
// survive the reboot or power-off that ends a hands-off run (the rescue
// system itself lives in RAM).
//
// The stick is found by its FAT volume label (target.RescueLabel); its
// partition is mounted read-write only while files are written, and every
// file is written under a temporary name, fsynced, renamed into place, and
// its directory fsynced before the partition is unmounted again, so a file
// on the stick is either whole or absent. Files of one run go to
// /rescue-logs/<host-id>-<UTC time>/ where <host-id> is the DMI system
// serial number or, when the firmware has none, the first NIC's MAC.
package keep

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/internal/durable"
	"github.com/esxi-rescue/rescue/rescue/inventory"
	"github.com/esxi-rescue/rescue/rescue/target"
	"golang.org/x/sys/unix"
)

// LogsDir is the directory on the stick that holds one directory per run.
const LogsDir = "rescue-logs"

// ErrNoStick means no FAT file system labelled RESCUE was found.
var ErrNoStick = errors.New("no rescue stick (FAT file system labelled " + target.RescueLabel + ") found")

// Options says where to look and how to name the run.
type Options struct {
	// Device is the stick's FAT partition (e.g. /dev/sdb1); "" finds it.
	Device string
	// Root is where sysfs and procfs are mounted ("" = "/"; tests use a
	// fake tree for HostID, never for mounting).
	Root string
	// HostID names the machine; "" = HostID(Root).
	HostID string
	// Time is the run's start; zero = now.
	Time time.Time
	// MountDir is where the partition is mounted while writing; "" = a
	// fresh directory under os.TempDir().
	MountDir string
	// FSType is the file system type to mount ("" = "vfat"). Tests on a
	// host kernel without vfat use ext2 for the mount logic.
	FSType string
}

// Stick is one run's directory on the rescue stick.
type Stick struct {
	dev    string
	runDir string // "rescue-logs/<host>-<time>", relative to the file system's root
	opt    Options

	mu      sync.Mutex
	mounts  int    // nested Mount calls
	mnt     string // where the file system is reachable while mounted
	ownsMnt bool   // we mounted it (and unmount it)
}

// New finds the stick and names the run's directory; it does not mount
// anything yet. It returns ErrNoStick when there is none.
func New(opt Options) (*Stick, error) {
	if opt.Root == "" {
		opt.Root = "/"
	}
	if opt.FSType == "" {
		opt.FSType = "vfat"
	}
	if opt.Time.IsZero() {
		opt.Time = time.Now()
	}
	if opt.HostID == "" {
		opt.HostID = HostID(opt.Root)
	}
	dev := opt.Device
	if dev == "" {
		found := Find(opt.Root)
		if len(found) == 0 {
			return nil, ErrNoStick
		}
		dev = found[0]
	}
	name := Sanitize(opt.HostID) + "-" + opt.Time.UTC().Format("20060102T150405Z")
	return &Stick{dev: dev, runDir: path.Join(LogsDir, name), opt: opt}, nil
}

// Device is the stick's partition.
func (s *Stick) Device() string { return s.dev }

// RunDir is the run's directory on the stick, e.g.
// "/rescue-logs/SN123-20261201T093000Z".
func (s *Stick) RunDir() string { return "/" + s.runDir }

// Where names a file of the run for messages: "/dev/sdb1:/rescue-logs/.../name".
func (s *Stick) Where(name string) string { return s.dev + ":" + path.Join(s.RunDir(), name) }

// Find lists the block devices (partitions and whole disks) that hold a
// FAT file system labelled RESCUE, by reading their first sector;
// partitions come first, in name order.
func Find(root string) []string {
	ents, err := os.ReadDir(filepath.Join(root, "sys/class/block"))
	if err != nil {
		return nil
	}
	var parts, disks []string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") || strings.HasPrefix(name, "sr") {
			continue
		}
		dev := "/dev/" + name
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		ok := target.IsRescueFAT(f, 0)
		f.Close()
		if !ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "sys/class/block", name, "partition")); err == nil {
			parts = append(parts, dev)
		} else {
			disks = append(disks, dev)
		}
	}
	sort.Strings(parts)
	sort.Strings(disks)
	return append(parts, disks...)
}

// Save writes one file of the run (mounting the stick for the time it
// takes) and returns Where(name).
func (s *Stick) Save(name string, data []byte) (string, error) {
	dir, unmount, err := s.Mount()
	if err != nil {
		return "", err
	}
	werr := WriteFile(dir, name, data)
	if err := unmount(); err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return "", fmt.Errorf("saving %s on the rescue stick: %w", name, werr)
	}
	return s.Where(name), nil
}

// Mount makes the run's directory reachable (creating it, durably) and
// returns its path; call unmount when done, which syncs and unmounts the
// stick unless it was mounted before (or another Mount is still open).
// Callers that need a path — gpt.Plan.Apply writes its undo file itself,
// durably, before it writes a sector — write into dir between the two.
func (s *Stick) Mount() (dir string, unmount func() error, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mounts == 0 {
		if err := s.mount(); err != nil {
			return "", nil, err
		}
	}
	s.mounts++
	dir, err = mkdirAllSync(s.mnt, s.runDir)
	if err != nil {
		s.release()
		return "", nil, fmt.Errorf("creating %s on the rescue stick: %w", s.RunDir(), err)
	}
	var once sync.Once
	unmount = func() error {
		var err error
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			err = s.release()
		})
		return err
	}
	return dir, unmount, nil
}

// mount mounts the stick (or finds where it is mounted already).
func (s *Stick) mount() error {
	if mp, ro, ok := mountPoint(s.opt.Root, s.dev); ok {
		if ro {
			return fmt.Errorf("the rescue stick %s is mounted read-only on %s", s.dev, mp)
		}
		s.mnt, s.ownsMnt = mp, false
		return nil
	}
	mnt := s.opt.MountDir
	if mnt == "" {
		d, err := os.MkdirTemp("", "rescue-stick-")
		if err != nil {
			return fmt.Errorf("making a mount point for the rescue stick: %w", err)
		}
		mnt = d
	} else if err := os.MkdirAll(mnt, 0o755); err != nil {
		return fmt.Errorf("making a mount point for the rescue stick: %w", err)
	}
	// flush: vfat writes data out early; noatime: no writes for reads.
	data := ""
	if s.opt.FSType == "vfat" {
		data = "flush"
	}
	err := unix.Mount(s.dev, mnt, s.opt.FSType, unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, data)
	if err != nil {
		if s.opt.MountDir == "" {
			os.Remove(mnt)
		}
		return fmt.Errorf("mounting the rescue stick %s (%s) read-write: %w", s.dev, s.opt.FSType, err)
	}
	s.mnt, s.ownsMnt = mnt, true
	return nil
}

// release drops one Mount; the last one syncs and unmounts.
func (s *Stick) release() error {
	s.mounts--
	if s.mounts > 0 {
		return nil
	}
	// syncfs, then unmount (which writes the FAT and the directory
	// entries back) and flush the device's buffers.
	if f, err := os.Open(s.mnt); err == nil {
		unix.Syncfs(int(f.Fd()))
		f.Close()
	}
	if !s.ownsMnt {
		return nil
	}
	var err error
	for i := 0; i < 20; i++ { // EBUSY while a file of ours is still closing
		if err = unix.Unmount(s.mnt, 0); err != unix.EBUSY {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("unmounting the rescue stick %s from %s: %w", s.dev, s.mnt, err)
	}
	if s.opt.MountDir == "" {
		os.Remove(s.mnt)
	}
	if f, err := os.OpenFile(s.dev, os.O_RDONLY, 0); err == nil {
		f.Sync()
		f.Close()
	}
	return nil
}

// WriteFile writes data to dir/name durably: a temporary file, fsync,
// rename, fsync of the directory. A file so written is whole or absent.
func WriteFile(dir, name string, data []byte) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return fmt.Errorf("bad file name %q", name)
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := durable.Commit(f, data, filepath.Join(dir, name), os.Rename); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}

// mkdirAllSync creates root/rel directory by directory, fsyncing each
// new directory's parent, and returns the full path.
func mkdirAllSync(root, rel string) (string, error) {
	cur := root
	for _, part := range strings.Split(rel, "/") {
		next := filepath.Join(cur, part)
		if err := os.Mkdir(next, 0o755); err == nil {
			if err := durable.SyncDir(cur); err != nil {
				return "", err
			}
		} else if fi, serr := os.Stat(next); serr != nil || !fi.IsDir() {
			return "", err
		}
		cur = next
	}
	return cur, nil
}

// mountPoint says where dev is mounted, from mountinfo (by major:minor).
func mountPoint(root, dev string) (mp string, readOnly, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", false, false
	}
	want := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	f, err := os.Open(filepath.Join(root, "proc/self/mountinfo"))
	if err != nil {
		return "", false, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 8:17 / /mnt rw,noatime shared:1 - vfat /dev/sdb1 rw,...
		fl := strings.Fields(sc.Text())
		if len(fl) < 6 || fl[2] != want || fl[3] != "/" {
			continue
		}
		ro := false
		for _, o := range strings.Split(fl[5], ",") {
			ro = ro || o == "ro"
		}
		return unescapeMount(fl[4]), ro, true
	}
	return "", false, false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// placeholders are DMI serial numbers firmware ships unset.
var placeholders = map[string]bool{
	"": true, "none": true, "n/a": true, "na": true, "not specified": true, "not applicable": true,
	"to be filled by o.e.m.": true, "to be filled by oem": true, "default string": true,
	"system serial number": true, "serial number": true, "unknown": true, "invalid": true,
	"0123456789": true, "123456789": true, "1234567890": true, "chassis serial number": true,
}

// HostID names this machine for the stick's directory names: the DMI
// system serial number (sys/class/dmi/id/product_serial) unless it is
// empty or a placeholder, else "mac-" and the first NIC's MAC, else
// "unknown-host". The result is safe as a FAT file name.
func HostID(root string) string {
	if id := Serial(root); id != "" {
		return id
	}
	if nics, err := (inventory.Sys{Root: root}).NICs(); err == nil {
		for _, n := range nics {
			if n.MAC != "" && n.MAC != "00:00:00:00:00:00" {
				return "mac-" + Sanitize(strings.ReplaceAll(n.MAC, ":", "-"))
			}
		}
	}
	return "unknown-host"
}

// Serial is the DMI system serial number, sanitized, or "" when the
// firmware has none or a placeholder.
func Serial(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "sys/class/dmi/id/product_serial"))
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if placeholders[strings.ToLower(s)] || oneChar(s) {
		return ""
	}
	return Sanitize(s)
}

// oneChar reports whether s is one character repeated ("0000", "xxxx").
func oneChar(s string) bool {
	return s != "" && strings.Count(s, s[:1]) == len(s)
}

// Sanitize keeps letters, digits, '.', '_' and '-' (anything else becomes
// '_'), trims '.', '_' and '-' at the ends and caps the length at 64: a
// name valid on FAT and in a URL.
func Sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := strings.Trim(b.String(), "._-")
	if len(out) > 64 {
		out = strings.TrimRight(out[:64], "._-")
	}
	return out
}
