package keep

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSanitize(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"CZ1234ABCD", "CZ1234ABCD"},
		{"  VMware-56 4d 2a/x  ", "VMware-56_4d_2a_x"},
		{"..a:b..", "a_b"},
		{"ÄÖ1", "1"},
		{"a b", "a_b"},
		{strings.Repeat("x", 80), strings.Repeat("x", 64)},
		{"---", ""},
	} {
		if got := Sanitize(c.in); got != c.want {
			t.Errorf("Sanitize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// fakeSys makes a sysfs tree with a DMI serial (nil: no file) and NICs.
func fakeSys(t *testing.T, serial *string, macs map[string]string) string {
	root := t.TempDir()
	if serial != nil {
		mustWrite(t, filepath.Join(root, "sys/class/dmi/id/product_serial"), *serial+"\n")
	}
	for name, mac := range macs {
		d := filepath.Join(root, "sys/class/net", name)
		mustWrite(t, filepath.Join(d, "address"), mac+"\n")
		mustWrite(t, filepath.Join(d, "type"), "1\n")
		os.MkdirAll(filepath.Join(d, "device"), 0o755)
	}
	return root
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHostID(t *testing.T) {
	str := func(s string) *string { return &s }
	nics := map[string]string{"eth1": "52:54:00:00:00:02", "eth0": "52:54:00:00:00:01"}
	for _, c := range []struct {
		name   string
		serial *string
		nics   map[string]string
		want   string
	}{
		{"serial", str("CZJ1234X7Y"), nics, "CZJ1234X7Y"},
		{"serial with spaces", str("VMware-56 4d 2a"), nics, "VMware-56_4d_2a"},
		{"placeholder", str("To be filled by O.E.M."), nics, "mac-52-54-00-00-00-01"},
		{"zeros", str("00000000"), nics, "mac-52-54-00-00-00-01"},
		{"empty", str(""), nics, "mac-52-54-00-00-00-01"},
		{"no dmi", nil, nics, "mac-52-54-00-00-00-01"},
		{"nothing", nil, nil, "unknown-host"},
	} {
		if got := HostID(fakeSys(t, c.serial, c.nics)); got != c.want {
			t.Errorf("%s: HostID = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(dir, "a.json", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(dir, "a.json", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.json")); string(b) != "two" {
		t.Errorf("a.json = %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	for _, bad := range []string{"", "../x", "a/b", ".."} {
		if err := WriteFile(dir, bad, nil); err == nil {
			t.Errorf("WriteFile(%q) accepted", bad)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/mnt/with\040space\`); got != `/mnt/with space\` {
		t.Errorf("unescapeMount = %q", got)
	}
}

// needLoop skips unless loop devices can be attached and the tools exist.
func needLoop(t *testing.T, tools ...string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	for _, tool := range append([]string{"losetup"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

// attach attaches length bytes of img from off to a loop device (loop
// partitions may not appear in containers, so no -P).
func attach(t *testing.T, img string, off, length int64) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(length), img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	return loop
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestFind: a GPT stick image made with sgdisk and mkfs.fat (FAT32
// labelled RESCUE at 1 MiB) is found by its label; a FAT file system
// labelled otherwise is not.
func TestFind(t *testing.T) {
	needLoop(t, "sgdisk", "mkfs.fat")
	dir := t.TempDir()
	var loops []string
	for _, label := range []string{"RESCUE", "OTHER"} {
		img := filepath.Join(dir, label+".img")
		run(t, "truncate", "-s", "40M", img)
		run(t, "sgdisk", "-n", "1:2048:+36M", "-t", "1:ef00", img)
		run(t, "mkfs.fat", "-F", "32", "-n", label, "--offset", "2048", img, "73728")
		loops = append(loops, attach(t, img, 1<<20, 36<<20))
	}
	found := Find("/")
	if !slices.Contains(found, loops[0]) {
		t.Errorf("Find = %v, want it to list %s (FAT labelled RESCUE)", found, loops[0])
	}
	if slices.Contains(found, loops[1]) {
		t.Errorf("Find = %v lists %s (FAT labelled OTHER)", found, loops[1])
	}
}

// extStick is a loop device holding an ext2 file system: this host's
// kernel has no vfat (the rescue kernel has; the QEMU test TestKeepOnStick
// checks the FAT side with mtools and fsck.fat), and the mount, nesting,
// sync and unmount logic is the same.
func extStick(t *testing.T) (img, loop string) {
	t.Helper()
	needLoop(t, "mkfs.ext2", "debugfs", "e2fsck")
	img = filepath.Join(t.TempDir(), "stick.img")
	run(t, "truncate", "-s", "16M", img)
	run(t, "mkfs.ext2", "-q", "-F", img)
	return img, attach(t, img, 0, 16<<20)
}

func TestStickOnLoopDevice(t *testing.T) {
	img, loop := extStick(t)
	start := time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	s, err := New(Options{Device: loop, HostID: "SN 42/x", Time: start, FSType: "ext2"})
	if err != nil {
		t.Fatal(err)
	}
	if s.RunDir() != "/rescue-logs/SN_42_x-20261201T093000Z" {
		t.Errorf("RunDir = %q", s.RunDir())
	}
	where, err := s.Save("report.json", []byte(`{"result":"ok"}`))
	if err != nil {
		t.Fatal(err)
	}
	if where != loop+":/rescue-logs/SN_42_x-20261201T093000Z/report.json" {
		t.Errorf("Save = %q", where)
	}
	if mp, _, ok := mountPoint("/", loop); ok {
		t.Fatalf("still mounted on %s after Save", mp)
	}
	// Nested: a path for a writer of its own (gpt.Plan.Apply), and a Save
	// meanwhile that must not unmount under it.
	dir, unmount, err := s.Mount()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save("console.log", []byte("line 1\nline 2\n")); err != nil {
		t.Fatal(err)
	}
	undo := bytes.Repeat([]byte("U"), 70000)
	if err := os.WriteFile(filepath.Join(dir, "undo.json"), undo, 0o644); err != nil {
		t.Fatalf("writing into the Mount dir after a nested Save: %v", err)
	}
	if err := unmount(); err != nil {
		t.Fatal(err)
	}
	if err := unmount(); err != nil { // twice is harmless
		t.Fatal(err)
	}
	if mp, _, ok := mountPoint("/", loop); ok {
		t.Fatalf("still mounted on %s after the last unmount", mp)
	}
	// Independent readers on the device: e2fsck and debugfs.
	if out, err := exec.Command("e2fsck", "-n", "-f", loop).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -n: %v\n%s", err, out)
	}
	base := "/rescue-logs/SN_42_x-20261201T093000Z/"
	listing := run(t, "debugfs", "-R", "ls "+base, img)
	for _, name := range []string{"report.json", "console.log", "undo.json"} {
		if !strings.Contains(listing, name) {
			t.Errorf("debugfs ls lacks %s:\n%s", name, listing)
		}
	}
	if strings.Contains(listing, ".tmp") {
		t.Errorf("temporary files left:\n%s", listing)
	}
	cat := func(name string) string {
		out, err := exec.Command("debugfs", "-R", "cat "+base+name, img).Output()
		if err != nil {
			t.Fatalf("debugfs cat %s: %v", name, err)
		}
		return string(out)
	}
	if got := cat("report.json"); got != `{"result":"ok"}` {
		t.Errorf("report.json = %q", got)
	}
	if got := cat("undo.json"); got != string(undo) {
		t.Errorf("undo.json: %d bytes, want %d", len(got), len(undo))
	}
}

func TestStickAlreadyMounted(t *testing.T) {
	_, loop := extStick(t)
	mnt := t.TempDir()
	if err := unix.Mount(loop, mnt, "ext2", 0, ""); err != nil {
		t.Skipf("mount: %v", err)
	}
	defer unix.Unmount(mnt, 0)
	s, err := New(Options{Device: loop, HostID: "h", Time: time.Unix(0, 0), FSType: "ext2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save("a.txt", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "rescue-logs/h-19700101T000000Z/a.txt")); err != nil || string(b) != "x" {
		t.Errorf("a.txt through the existing mount: %q %v", b, err)
	}
	if _, _, ok := mountPoint("/", loop); !ok {
		t.Errorf("Save unmounted a mount it did not make")
	}
	// Read-only: a clear error, nothing written.
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save("b.txt", []byte("x")); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("Save on a read-only mount = %v", err)
	}
}

func TestMountFails(t *testing.T) {
	_, loop := extStick(t)
	s, _ := New(Options{Device: loop, HostID: "h", FSType: "vfat-nonexistent"})
	if _, err := s.Save("a", nil); err == nil || !strings.Contains(err.Error(), "mounting the rescue stick") {
		t.Errorf("Save with an unmountable stick = %v", err)
	}
}

func TestNoStick(t *testing.T) {
	if _, err := New(Options{Root: t.TempDir()}); err != ErrNoStick {
		t.Errorf("New without a stick = %v, want ErrNoStick", err)
	}
}
