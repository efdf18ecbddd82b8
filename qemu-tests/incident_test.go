package qemutests

import (
	"context"
	"os"
	"testing"
)

// incidentDisk is the incident's disk: ESXi 5.0 on 6 GiB (every partition,
// datastore included), raw-copied by "Windows" onto an 8 GiB disk.
var incidentDisk = BrokenOptions{Version: "5.0", Size: "6G", DamageSize: "8G", Mode: "windows"}

// checkFixed is "fixed as in scenario 1", from the host: both entry arrays
// byte-identical to the original's, the backup at the new last LBA,
// `sgdisk -v` clean, and every partition's data as before the fix.
func checkFixed(t *testing.T, b *Broken, before map[string]string) {
	t.Helper()
	if err := CheckFixedGPT(b.Damaged, b.SectorSize, b.OrigGPT.Primary); err != nil {
		t.Error(err)
	}
	if b.SectorSize == 512 {
		if err := SgdiskVerify(b.Damaged); err != nil {
			t.Error(err)
		}
	} else if os.Geteuid() != 0 {
		t.Logf("not root: no loop device with 4096-byte sectors for sgdisk -v; the raw checks above still ran")
	} else if err := SgdiskVerify4K(b.Damaged); err != nil {
		t.Error(err)
	}
	after, err := PartitionDigests(b.Damaged, b.SectorSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := CompareDigests(before, after); err != nil {
		t.Error(err)
	}
}

// brokenIncident makes the incident's disk (ESXi 5.0 compacted onto a
// bigger disk) in a new temporary directory and returns it with the
// partition digests damagedDigests took.
func brokenIncident(t *testing.T, tl *Tools) (*Broken, map[string]string) {
	t.Helper()
	b, err := MakeBroken(tl, t.TempDir(), incidentDisk)
	if err != nil {
		t.Fatal(err)
	}
	return b, damagedDigests(t, b)
}

// damagedDigests checks that the damage really changed the entry array (a
// test whose disk is not broken proves nothing) and returns the partition
// digests to compare after the fix.
func damagedDigests(t *testing.T, b *Broken) map[string]string {
	t.Helper()
	g, err := ReadRawGPT(b.Damaged, b.SectorSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckFixedGPT(b.Damaged, b.SectorSize, b.OrigGPT.Primary); err == nil {
		t.Fatalf("esximg damage left %s looking fixed already; the test would prove nothing", b.Damaged)
	}
	t.Logf("original slots: %s", b.OrigGPT.Primary.SlotsString())
	t.Logf("damaged slots:  %s", g.Primary.SlotsString())
	d, err := PartitionDigests(b.Damaged, b.SectorSize)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestIncident is scenario 1: the incident reproduced and fixed. u-root's
// esxiboot (which, like VMware's loader, looks for boot banks at entries 5
// and 6) cannot boot the right bank of the damaged disk; the rescue system
// fixes it hands-off; the host checks the bytes; esxiboot then boots the
// stub kernel from the right bank.
func TestIncident(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()
	b, before := brokenIncident(t, tl)
	initrd := esxibootInitrd(t, a)
	ctx := context.Background()

	// 1. Before: esxiboot in dry run fails or loads the wrong bank.
	res, r, err := RunEsxiboot(ctx, a, initrd, Disk{Path: b.Damaged}, true, t.Name()+"-esxiboot-before", nil)
	if r != nil {
		t.Cleanup(r.Stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	msg, err := BeforeFix(b, res)
	if err != nil {
		t.Fatalf("%v\n%s", err, r.Tail(20))
	}
	t.Logf("before the fix: %s", msg)

	// 2. The fix, hands-off.
	handsOff(t, VM{
		Name:    t.Name() + "-fix",
		Kernel:  a.Kernel,
		Initrd:  a.Initramfs,
		Cmdline: KernelCmdline("rescue.action=fix", "rescue.ref=esxi", "rescue.target=auto", "rescue.done=poweroff"),
		Disks:   []Disk{{Path: b.Damaged}},
	}, nil)
	checkFixed(t, b, before)
	if t.Failed() {
		t.FailNow()
	}

	// 3. After: esxiboot boots the stub kernel from the right bank.
	res, r, err = RunEsxiboot(ctx, a, initrd, Disk{Path: b.Damaged}, false, t.Name()+"-esxiboot-after", nil)
	if r != nil {
		t.Cleanup(r.Stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Booted != b.RightBank {
		t.Errorf("after the fix the stub kernel was booted from bank %s, want the primary bank %s%s", res.Booted, b.RightBank, Diagnose(res.Lines))
	}
	// esxiboot's "Cmdline: ... bootUUID=" line may not reach the serial
	// console: the kexec into the stub can come before the kernel's
	// console has written it (seen under load: "Loaded image:
	// MultibootImage(" directly followed by the stub's line). The bank
	// the stub kernel itself reports is what proves the boot; the
	// loader's line, when it is there, must agree with it.
	switch {
	case res.Loaded == "":
		t.Logf("esxiboot's Cmdline line was cut off by the kexec; the stub kernel reports bank %s", res.Booted)
	case res.Loaded != res.Booted:
		t.Errorf("esxiboot loaded bank %q but the kernel says %q", res.Loaded, res.Booted)
	}
}

// TestFixAndBoot is scenario 1 in one boot, as an administrator would run
// it: fix hands-off, then rescue.done=boot kexecs ESXi from the fixed disk.
// The kernel must see the corrected partition numbers (a re-read of the
// partition table after the write), or the boot takes the wrong bank.
func TestFixAndBoot(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()
	b, before := brokenIncident(t, tl)
	r, m := handsOff(t, VM{
		Name:    t.Name(),
		Kernel:  a.Kernel,
		Initrd:  a.Initramfs,
		Cmdline: KernelCmdline("rescue.action=fix", "rescue.ref=esxi", "rescue.target=auto", "rescue.done=boot"),
		Disks:   []Disk{{Path: b.Damaged}},
	}, reStub)
	if m[1] != b.RightBank {
		t.Errorf("after the fix, rescue.done=boot booted bank %s, want the primary bank %s (the alternate is %s); "+
			"does the rescue system make the kernel re-read the partition table (BLKRRPART) after the fix?", m[1], b.RightBank, b.AltBank)
	}
	r.Stop()
	checkFixed(t, b, before)
}
