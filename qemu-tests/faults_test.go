package qemutests

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
)

// TestPowerCut is scenario 5's power cut: QEMU is killed while the fix is
// between its backup and primary GPT writes (rescue.testpause= makes the
// fix step set gpt.PauseEnv, so gpt's Apply prints gpt.PauseMarker and
// sleeps there). The disk must still be readable by sgdisk from a valid
// copy, and a second hands-off boot completes the fix.
func TestPowerCut(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()
	b, before := brokenIncident(t, tl)

	r := boot(t, "cut", VM{
		Kernel: a.Kernel, Initrd: a.Initramfs,
		Cmdline: KernelCmdline(append([]string{"rescue.testpause=between-backup-and-primary"}, handsOffFix...)...),
		Disks:   []Disk{{Path: b.Damaged}},
		Timeout: Scaled(DefaultHandsOff),
	})
	if _, err := r.Expect(regexp.MustCompile(regexp.QuoteMeta(gpt.PauseMarker)), 0, MarkFailed, MarkDone); err != nil {
		t.Fatal(err)
	}
	r.Stop() // the power cut
	t.Logf("power cut after %s, during the fix", r.Elapsed().Round(time.Second))

	out, err := exec.Command("sgdisk", "-p", b.Damaged).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Number  Start") {
		t.Errorf("sgdisk cannot read the disk after the power cut: %v\n%s", err, out)
	}
	g, err := ReadRawGPT(b.Damaged, 512)
	if err != nil {
		t.Fatalf("no primary GPT after the power cut: %v", err)
	}
	primaryOK := g.Primary.HeaderCRCOK && g.Primary.ArrayCRCOK
	backupOK := g.Backup != nil && g.Backup.HeaderCRCOK && g.Backup.ArrayCRCOK
	t.Logf("after the cut: primary valid=%v slots %s; backup at the end valid=%v", primaryOK, g.Primary.SlotsString(), backupOK)
	if !primaryOK && !backupOK {
		t.Errorf("neither GPT copy is valid after the power cut")
	}
	// The pause comes after the backup write: the new backup must be there.
	if !backupOK {
		t.Errorf("the pause marker came but there is no valid backup GPT at the last LBA")
	}
	if d, err := PartitionDigests(b.Damaged, 512); err != nil {
		t.Error(err)
	} else if err := CompareDigests(before, d); err != nil {
		t.Error(err)
	}

	handsOff(t, VM{
		Name:   t.Name() + "-again",
		Kernel: a.Kernel, Initrd: a.Initramfs,
		Cmdline: KernelCmdline(handsOffFix...),
		Disks:   []Disk{{Path: b.Damaged}},
	}, nil)
	checkFixed(t, b, before)
}

// TestLayouts is scenario 6: other ESXi versions and damage, other disk
// controllers and a 4Kn disk, each fixed hands-off and checked as in
// scenario 1.
func TestLayouts(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()
	for _, tc := range []struct {
		name string
		opt  BrokenOptions
		bus  string
		say  string // a console line the fix must print ("" = none)
	}{
		{"6.7-sorted-ahci", BrokenOptions{Version: "6.7", Size: "4G", Mode: "sorted"}, "ahci", ""},
		{"7.0-stale-backup-scsi", BrokenOptions{Version: "7.0", Size: "8G", DamageSize: "10G", Mode: "stale-backup"}, "scsi", ""},
		{"7.0-sorted-4Kn", BrokenOptions{Version: "7.0", Size: "8G", Mode: "sorted", SectorSize: 4096}, "virtio-4k", ""},
		// The incident's compaction on 7.0 and 8.0 disks (8.0 needs room
		// for OSDATA: 40 GB); the 7.0 loader would boot the right bank
		// from slot 2, the 5/6-only loader nothing.
		{"7.0-compacted-virtio", BrokenOptions{Version: "7.0", Size: "8G", DamageSize: "10G", Mode: "windows"}, "virtio",
			"before fix: ESXi 7.0 to 7.0u1 would boot entry 2"},
		{"8.0-compacted-scsi", BrokenOptions{Version: "8.0", Size: "40G", DamageSize: "48G", Mode: "windows"}, "scsi",
			"before fix: ESXi 7.0u2 and later would boot entry 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := MakeBroken(tl, t.TempDir(), tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			before := damagedDigests(t, b)
			r, _ := handsOff(t, VM{
				Name:   t.Name(),
				Kernel: a.Kernel, Initrd: a.Initramfs,
				Cmdline: KernelCmdline(handsOffFix...),
				Disks:   []Disk{{Path: b.Damaged, Bus: tc.bus}},
			}, nil)
			checkFixed(t, b, before)
			if tc.say != "" && !strings.Contains(r.Output(), tc.say) {
				t.Errorf("the console lacks %q (log %s)", tc.say, r.LogPath())
			}
		})
	}
}
