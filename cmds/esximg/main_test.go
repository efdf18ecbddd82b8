package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
)

func esximg(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestCLI runs the incident end to end through the command line: create,
// inspect (0), damage windows, inspect (1, naming the misplaced bank),
// plus usage errors (2).
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "esxi.img")
	dmg := filepath.Join(dir, "damaged.img")
	code, out, errs := esximg(t, "create", "-version", "5.0", "-size", "8G", "-seed", "4", img)
	if code != 0 {
		t.Fatalf("create: %d %s", code, errs)
	}
	opt := esxi.CreateOptions{Version: "5.0", Size: 8 << 30, Seed: 4}
	if !strings.Contains(out, "bootUUID="+opt.BankUUID(5)) {
		t.Errorf("create output lacks the bank UUID:\n%s", out)
	}
	if code, out, _ := esximg(t, "inspect", img); code != 0 || !strings.Contains(out, "bootable: ESXi boots bank "+opt.BankUUID(5)) {
		t.Errorf("inspect original: exit %d\n%s", code, out)
	}
	if code, _, errs := esximg(t, "damage", "-mode", "windows", "-size", "10G", img, dmg); code != 0 {
		t.Fatalf("damage: %d %s", code, errs)
	}
	if st, _ := os.Stat(dmg); st.Size() != 10<<30 {
		t.Errorf("damaged size %d", st.Size())
	}
	code, out, _ = esximg(t, "inspect", "-json", dmg)
	if code != 1 {
		t.Errorf("inspect damaged: exit %d, want 1", code)
	}
	var rep esxi.BootReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("inspect -json: %v\n%s", err, out)
	}
	if rep.OK || !strings.Contains(rep.Verdict, "is at entry 4, not where ESXi 5/6 looks") {
		t.Errorf("inspect damaged: %+v", rep)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"-h"}, 0},
		{[]string{"bogus"}, 2},
		{[]string{"create", "-h"}, 0},
		{[]string{"create", img}, 2},                    // no -version
		{[]string{"create", "-version", "5.0", img}, 2}, // exists
		{[]string{"create", "-version", "5.0", "-size", "x", "a"}, 2}, // bad size
		{[]string{"create", "-version", "5.0", "-nope", "a"}, 2},      // bad flag
		{[]string{"damage", "-h"}, 0},
		{[]string{"damage", img}, 2}, // no -mode
		{[]string{"damage", "-mode", "bogus", img, filepath.Join(dir, "x")}, 2},
		{[]string{"damage", "-mode", "sorted", img, dmg}, 2}, // DST exists
		{[]string{"inspect", "-h"}, 0},
		{[]string{"inspect", filepath.Join(dir, "missing")}, 2},
		{[]string{"inspect"}, 2},
	} {
		if code, _, errs := esximg(t, c.args...); code != c.code {
			t.Errorf("esximg %v: exit %d, want %d (%s)", c.args, code, c.code, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Errorf("failed damage left its destination behind")
	}
	// In place, then -f to overwrite a destination.
	if code, _, errs := esximg(t, "damage", "-mode", "primary-crc", dmg); code != 0 {
		t.Errorf("damage in place: %d %s", code, errs)
	}
	if code, out, _ := esximg(t, "inspect", dmg); code != 1 || !strings.Contains(out, "CRC mismatch") {
		t.Errorf("inspect after primary-crc: %d\n%s", code, out)
	}
	if code, _, errs := esximg(t, "damage", "-f", "-mode", "stale-backup", img, dmg); code != 0 {
		t.Errorf("damage -f: %d %s", code, errs)
	}
	if code, _, _ := esximg(t, "inspect", dmg); code != 0 {
		t.Errorf("stale backup should still boot (exit %d)", code)
	}
}

// TestCLIOptions: the installer's options, the snapshot warning against a
// reference made on another disk, and their usage errors.
func TestCLIOptions(t *testing.T) {
	dir := t.TempDir()
	usb := filepath.Join(dir, "usb.img")
	code, out, errs := esximg(t, "create", "-version", "6.7", "-media", "usb", "-size", "8G", usb)
	if code != 0 || !strings.Contains(out, "entries in disk order: 1,5,6,7,8,9") {
		t.Fatalf("create -media usb: %d %s %s", code, out, errs)
	}
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for i, p := range []string{a, b} {
		if code, _, errs := esximg(t, "create", "-version", "7.0", "-size", "200G", "-system-media-size", "min", "-seed", fmt.Sprint(10+i), p); code != 0 {
			t.Fatalf("create: %s", errs)
		}
	}
	if code, out, _ := esximg(t, "inspect", "-ref", a, a); code != 0 || strings.Contains(out, "WARNING") {
		t.Errorf("inspect -ref itself: %d\n%s", code, out)
	}
	code, out, _ = esximg(t, "inspect", "-ref", b, a)
	if code != 0 || !strings.Contains(out, "WARNING") || !strings.Contains(out, "esxcli storage vmfs snapshot mount -l datastore1") {
		t.Errorf("inspect -ref another disk: %d\n%s", code, out)
	}
	if code, out, _ := esximg(t, "create", "-version", "6.7", "-size", "16G", "-upgraded-from", "5.0", filepath.Join(dir, "up.img")); code != 0 || !strings.Contains(out, "1,5,6,7,8,2,3") {
		t.Errorf("create -upgraded-from: %d %s", code, out)
	}
	for _, args := range [][]string{
		{"create", "-version", "6.7", "-media", "floppy", filepath.Join(dir, "x1")},
		{"create", "-version", "6.7", "-system-media-size", "min", filepath.Join(dir, "x2")},
		{"create", "-version", "7.0", "-upgraded-from", "6.7", filepath.Join(dir, "x3")},
		{"create", "-version", "6.7", "-build", "7.0.0-1", filepath.Join(dir, "x4")},
		{"inspect", "-identity-of", a, a}, // not a block device
		{"inspect", "-ref", usb, a},       // no VMFS in the reference
	} {
		if code, _, _ := esximg(t, args...); code != 2 {
			t.Errorf("esximg %v: exit %d, want 2", args, code)
		}
	}
}
