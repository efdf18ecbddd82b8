package target

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/rescue/inventory"
)

func fileDisk(t *testing.T, path string) inventory.Disk {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return inventory.Disk{Name: filepath.Base(path), Path: path, Size: st.Size(), SectorSize: 512}
}

func TestExamine(t *testing.T) {
	dir := t.TempDir()
	esx := filepath.Join(dir, "esxi5.img")
	if err := esxi.Create(esx, esxi.CreateOptions{Version: "5.0", Size: 10 * gib, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "esxi5-other.img")
	if err := esxi.Create(other, esxi.CreateOptions{Version: "5.0", Size: 12 * gib, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	blank := filepath.Join(dir, "blank.img")
	if err := os.Truncate(blank, 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	os.WriteFile(blank, nil, 0o644)
	os.Truncate(blank, 4*gib)

	// A stick like the rescue USB image: GPT, FAT32 ESP labelled RESCUE
	// (made with sgdisk and mkfs.fat, not with our code).
	stick := filepath.Join(dir, "stick.img")
	os.WriteFile(stick, nil, 0o644)
	os.Truncate(stick, 256<<20)
	run(t, "sgdisk", "-n", "1:2048:+200M", "-t", "1:ef00", stick)
	run(t, "mkfs.fat", "-F", "32", "-n", RescueLabel, "--offset", "2048", stick, "204800")

	ref, err := gpt.ReadFile(esx, 512)
	if err != nil {
		t.Fatal(err)
	}
	f := Examine(fileDisk(t, esx), ref, nil)
	if !f.HasGPT || f.ESXi == "" || !f.RefMatch || f.Blank || f.RescueMedium || f.ReadErr != "" {
		t.Errorf("ESXi image with itself as reference: %+v", f)
	}
	f = Examine(fileDisk(t, other), ref, nil)
	if !f.HasGPT || f.ESXi == "" || f.RefMatch {
		t.Errorf("another ESXi install against the reference: %+v", f)
	}
	f = Examine(fileDisk(t, blank), ref, nil)
	if f.HasGPT || !f.Blank || f.ReadErr != "" {
		t.Errorf("blank disk: %+v", f)
	}
	f = Examine(fileDisk(t, stick), nil, nil)
	if !f.RescueMedium || f.ESXi != "" {
		t.Errorf("rescue stick: %+v", f)
	}
	f = Examine(fileDisk(t, esx), nil, map[string]bool{esx: true})
	if !f.RescueMedium {
		t.Errorf("medium map ignored: %+v", f)
	}
	f = Examine(inventory.Disk{Name: "nope", Path: filepath.Join(dir, "nope")}, nil, nil)
	if f.ReadErr == "" {
		t.Errorf("missing disk: %+v", f)
	}

	// And the whole decision over these disks.
	var all []Facts
	for _, p := range []string{stick, esx, other, blank} {
		all = append(all, Examine(fileDisk(t, p), ref, nil))
	}
	got, _, err := Select(all, Need{Purpose: ForFix, HaveRef: true, Writes: true})
	if err != nil || got.Disk.Path != esx {
		t.Errorf("fix with reference chose %v, %v; want %s", got, err, esx)
	}
	_, _, err = Select(all, Need{Purpose: ForFix, Writes: true})
	if err == nil || !strings.Contains(err.Error(), "2 disks qualify") {
		t.Errorf("fix by ESXi recognition with two ESXi disks: %v", err)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if _, err2 := os.Stat("/usr/sbin/" + name); err2 != nil {
			t.Fatalf("%s is not installed (see APT_PACKAGES in build.sh)", name)
		}
		name = "/usr/sbin/" + name
	}
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
