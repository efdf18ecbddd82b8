package qemutests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// handsOffFix are the rescue.* words of the hands-off fix in scenarios 1, 3
// and 4.
var handsOffFix = []string{"rescue.action=fix", "rescue.ref=esxi", "rescue.target=auto", "rescue.done=poweroff"}

// TestPXE is scenario 3: the VM boots from the network only (SeaBIOS, the
// NIC's iPXE ROM — virtio-net and e1000 —, QEMU's built-in DHCP and TFTP serving out/pxe/), with the
// kernel line of out/pxe/boot.ipxe switched to the hands-off fix, and the
// damaged disk is fixed as in scenario 1.
func TestPXE(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	ipxe, err := os.ReadFile(filepath.Join(a.PXEDir, "boot.ipxe"))
	if err != nil {
		t.Fatalf("%v: run ./build.sh first", err)
	}
	t.Parallel()
	tftp := t.TempDir()
	// no_timer_check: on a loaded TCG host the kernel's IO-APIC timer check
	// fails ("IO-APIC + timer doesn't work!", a panic at 0.05 s) — seen on
	// both NICs with 30+ runnable processes on 2 cores.
	script, err := handsOffIPXE(string(ipxe), append([]string{"panic=-1", "no_timer_check"}, handsOffFix...))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tftp, "boot.ipxe"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	// Everything else boot.ipxe fetches comes from out/pxe/ as built.
	ents, err := os.ReadDir(a.PXEDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "boot.ipxe" {
			if err := os.Symlink(filepath.Join(a.PXEDir, e.Name()), filepath.Join(tftp, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The NIC's own iPXE option ROM (QEMU's default for the model, from
	// ipxe-qemu) boots: virtio-net and e1000, the most common PXE NIC.
	for _, model := range []string{"virtio-net-pci", "e1000"} {
		t.Run(model, func(t *testing.T) {
			t.Parallel()
			b, before := brokenIncident(t, tl)
			r, _ := handsOff(t, VM{
				Name:  t.Name(),
				Boot:  "n",
				Disks: []Disk{{Path: b.Damaged}},
				Net:   &Net{TFTPDir: tftp, BootFile: "boot.ipxe", Model: model},
			}, nil)
			if !strings.Contains(r.Output(), "BOOTIF=01-") {
				t.Logf("note: the kernel command line shows no BOOTIF= from iPXE")
			}
			checkFixed(t, b, before)
		})
	}
}

// handsOffIPXE rewrites the kernel line of an iPXE script: its rescue.*
// words are replaced by args.
func handsOffIPXE(script string, args []string) (string, error) {
	lines := strings.Split(script, "\n")
	found := false
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "kernel" {
			continue
		}
		var keep []string
		for _, w := range f {
			if !strings.HasPrefix(w, "rescue.") {
				keep = append(keep, w)
			}
		}
		lines[i] = strings.Join(append(keep, args...), " ")
		found = true
	}
	if !found {
		return "", fmt.Errorf("out/pxe/boot.ipxe has no kernel line to put the hands-off arguments on:\n%s", script)
	}
	return strings.Join(lines, "\n"), nil
}

// TestUSB is scenario 4: out/rescue-usb.img is the only boot device of a
// UEFI machine (OVMF), its plain-text GRUB configuration edited with mtools
// to run the hands-off fix with rescue.done=reboot (-no-reboot: the VM
// stops), and the damaged disk is fixed as in scenario 1. Nothing lost
// (issue 14): the stick's FAT partition then holds the run's undo file,
// console log and report in /rescue-logs/<host-id>-<time>/ (read with
// mtools, checked with fsck.fat), the rest of the stick is unchanged, and
// `gptfix -undo` of the undo file — and of the report — puts the damaged
// table back byte for byte (cmp).
func TestUSB(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg", "gptfix")
	missingRescue(t)
	t.Parallel()
	dir := t.TempDir()
	stick, ovmf := rescueStick(t, a, dir)
	args := append([]string{"panic=-1"}, handsOffFix...)
	for i, w := range args {
		if w == "rescue.done=poweroff" {
			args[i] = "rescue.done=reboot" // the one copy of the undo file must survive the reboot
		}
	}
	if err := setStickArgs(stick, args); err != nil {
		t.Fatal(err)
	}
	stickBefore := stickFiles(t, stick, "before")
	b, err := MakeBroken(tl, dir, incidentDisk)
	if err != nil {
		t.Fatal(err)
	}
	before := damagedDigests(t, b)
	damagedCopy := filepath.Join(dir, "damaged-before.img")
	if err := CopySparse(b.Damaged, damagedCopy); err != nil {
		t.Fatal(err)
	}
	r, _ := handsOff(t, VM{
		Name:  t.Name(),
		BIOS:  ovmf,
		Disks: []Disk{{Path: stick, Bus: "usb"}, {Path: b.Damaged}},
		Extra: []string{"-smbios", "type=1,serial=CZ-TEST 42"}, // the DMI serial names the run's directory
	}, nil)
	// The kernel line must be the stick's own (its console_args) with the
	// arguments edited into the stick's file.
	want := strings.Join(args, " ")
	if cl := regexp.MustCompile(`Command line: (.*)`).FindStringSubmatch(r.Output()); cl == nil || !strings.Contains(cl[1], want) {
		t.Errorf("the kernel did not get the stick's edited arguments %q; command line: %q", want, cl)
	}
	checkFixed(t, b, before)
	checkKept(t, tl, stick, stickBefore, b.Damaged, damagedCopy, "CZ-TEST_42")
}

// stickConfig is where the USB stick keeps its hands-off arguments: the
// GRUB configuration's `set rescue_args="..."` line (see the stick's
// README.txt).
const stickConfig = "::/boot/grub/grub.cfg"

var reRescueArgs = regexp.MustCompile(`(?m)^set rescue_args=".*"$`)

// setStickArgs edits the stick image's GRUB configuration in place with
// mtools, setting rescue_args to args.
func setStickArgs(stick string, args []string) error {
	parts, err := Sfdisk(stick)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("%s has no partitions", stick)
	}
	img := fmt.Sprintf("%s@@%d", stick, parts[0].Start*512)
	cfg := filepath.Join(filepath.Dir(stick), "grub.cfg")
	if out, err := exec.Command("mcopy", "-n", "-i", img, stickConfig, cfg).CombinedOutput(); err != nil {
		return fmt.Errorf("mcopy %s from the stick: %v: %s", stickConfig, err, out)
	}
	text, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	if !reRescueArgs.Match(text) {
		return fmt.Errorf("the stick's %s has no `set rescue_args=\"...\"` line:\n%s", stickConfig, text)
	}
	text = reRescueArgs.ReplaceAll(text, []byte(`set rescue_args="`+strings.Join(args, " ")+`"`))
	if err := os.WriteFile(cfg, text, 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("mcopy", "-o", "-i", img, cfg, stickConfig).CombinedOutput(); err != nil {
		return fmt.Errorf("mcopy %s to the stick: %v: %s", stickConfig, err, out)
	}
	return nil
}
