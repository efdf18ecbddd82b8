// Command esxibootinit is a test-only uinit for the QEMU tests: it replaces
// the rescue system's /bin/uinit (through an initramfs overlay, see
// qemutests.EsxibootInitramfs) so that a boot runs u-root's own ESXi loader,
// esxiboot, unattended, instead of our rescue flow.
//
// It loads the disk and FAT drivers, waits for the disk and its partitions,
// runs `esxiboot ARGS...` (the uinit arguments, from uroot.uinitargs= on
// the kernel command line), prints "ESXIBOOT-TEST: exit N" and powers off.
// Without -dry-run esxiboot kexecs the kernel it loaded and never returns.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// modules the disks in the tests need; missing or built-in ones are fine.
// nls_ascii matters: Debian's kernel mounts FAT with iocharset=ascii by
// default (CONFIG_FAT_DEFAULT_IOCHARSET), and without it esxiboot cannot
// mount a boot bank.
var modules = []string{
	"virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "ata_piix",
	"nls_ascii", "nls_cp437", "nls_utf8", "vfat",
}

func main() {
	args := os.Args[1:]
	say("loading drivers")
	for _, m := range modules {
		if err := kmodule.Probe(m, ""); err != nil && !strings.Contains(err.Error(), "exist") && !strings.Contains(err.Error(), "could not find") {
			say("modprobe %s: %v", m, err)
		}
	}
	dev := deviceArg(args)
	if dev != "" {
		if err := waitFor(dev, 30*time.Second); err != nil {
			say("%v", err)
		}
		// Partition nodes appear a moment after the disk.
		waitFor(dev+"5", 5*time.Second)
		waitFor(dev+"6", 2*time.Second)
		ls, _ := filepath.Glob(dev + "*")
		say("block devices: %s", strings.Join(ls, " "))
	}
	bin := "/bbin/esxiboot"
	if _, err := os.Stat(bin); err != nil {
		bin = "esxiboot"
	}
	say("running esxiboot %s", strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	code := 0
	if err := cmd.Run(); err != nil {
		code = 1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			say("%v", err)
		}
	}
	say("exit %d", code)
	os.Stdout.Sync()
	time.Sleep(500 * time.Millisecond) // let the serial port drain
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func say(format string, a ...any) {
	fmt.Printf("ESXIBOOT-TEST: "+format+"\n", a...)
}

func deviceArg(args []string) string {
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if (a == "device" || a == "d") && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "device="); ok {
			return v
		}
	}
	return ""
}

func waitFor(path string, d time.Duration) error {
	end := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("%s did not appear within %s", path, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
