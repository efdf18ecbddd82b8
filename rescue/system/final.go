package system

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/rescue/inventory"
	"github.com/esxi-rescue/rescue/rescue/target"
	"golang.org/x/sys/unix"
)

// release is the running kernel's release (uname -r).
func release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// BannerFile is the banner the initramfs ships (initramfs/files/etc).
const BannerFile = "/etc/rescue-banner"

// Commands lists the rescue tools the banner names when BannerFile is
// missing.
const Commands = `Commands:
  gptdiff   compare two GPT partition tables slot by slot
  gptfix    put GPT entries back where ESXi expects them (shows the plan; writes only with -yes)
  imgcopy   restore or back up a raw disk image (file, device, http/https)
  esximg    inspect an ESXi disk (boot banks, layout)
  esxiboot  boot the ESXi installation on a disk (kexec): esxiboot --device /dev/sdX
  ls /sys/block, ip addr, dhclient, mount, dmesg, modprobe, poweroff
`

// Banner writes the interactive shell's greeting: the disks found with
// their size, model and GPT summary, the NICs, and the commands.
func Banner(w io.Writer, disks []inventory.Disk, nics []inventory.NIC) {
	var b strings.Builder
	if text, err := os.ReadFile(BannerFile); err == nil {
		b.Write(text)
		if !strings.HasSuffix(string(text), "\n") {
			b.WriteByte('\n')
		}
	} else {
		b.WriteString("ESXi rescue system (u-root shell: gosh).\n" + Commands)
	}
	b.WriteString("Disks:\n")
	if len(disks) == 0 {
		b.WriteString("  none found (dmesg shows driver messages)\n")
	}
	var cmds []string
	for _, d := range disks {
		fmt.Fprintf(&b, "  %s — %s\n", d.Describe(), Summary(d))
		cmds = append(cmds, DiskCommands(d)...)
	}
	if len(cmds) > 0 {
		b.WriteString("Commands for these disks:\n")
		for _, c := range cmds {
			b.WriteString("  " + c + "\n")
		}
	}
	if len(nics) > 0 {
		b.WriteString("Network interfaces:\n")
		for _, n := range nics {
			fmt.Fprintf(&b, "  %s %s link %s\n", n.Name, n.MAC, n.Link)
		}
	}
	if hw, err := HardwareReport("/", release()); err == nil && len(hw.PCI)+len(hw.OtherFirmwareMissing) > 0 {
		b.WriteString("Controllers (storage, network, USB, SD; driver or why none):\n")
		for _, l := range hw.Lines() {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	b.WriteString("Hands-off mode: boot with rescue.action=restore,fix,verify rescue.target=auto ... (see README)\n")
	io.WriteString(w, b.String())
}

// DiskCommands names the exact commands for a disk, as the banner shows
// them: for an ESXi disk with entries out of place the plan and the fix,
// for any ESXi disk the boot check and the kexec, for a table needing
// repair gptfix, for a blank disk a restore. The rescue stick gets none.
func DiskCommands(d inventory.Disk) []string {
	f := target.Examine(d, nil, nil)
	p := d.Path
	switch {
	case f.RescueMedium || f.ReadErr != "":
		return nil
	case f.Blank:
		return []string{cmd("imgcopy -sha256 HEX http://SERVER/esxi.img.zst "+p, "restore an image onto the blank "+p)}
	case !f.HasGPT:
		return nil
	}
	t, err := gpt.ReadFile(p, d.SectorSize)
	if err != nil {
		return nil
	}
	m, err := esxi.Recognize(t)
	if err != nil {
		if plan, err := gpt.PlanFix(t, gpt.FixOptions{}); err == nil && !plan.Empty() {
			return []string{cmd("gptfix "+p, "show what is wrong and the plan"), cmd("gptfix -yes "+p, "repair it (undo file first)")}
		}
		return nil
	}
	var out []string
	plan, err := gpt.PlanFix(t, gpt.FixOptions{SlotMap: m.SlotMap})
	if err == nil && !plan.Empty() {
		out = append(out, cmd("gptfix -esxi "+p, "the plan: ESXi "+m.Family+" entries back in their slots"),
			cmd("gptfix -esxi -yes "+p, "apply it (undo file first, then verified)"))
	}
	return append(out, cmd("esximg inspect "+p, "what ESXi's boot loader does with it"),
		cmd("esxiboot --device "+p, "boot that ESXi (kexec; not under Secure Boot)"))
}

func cmd(c, why string) string { return fmt.Sprintf("%-30s # %s", c, why) }

// Shell replaces the process with the u-root shell (gosh), or returns an
// error when there is none.
func Shell() error {
	for _, p := range []string{"/bbin/gosh", "/bin/gosh", "/bin/sh", "/bbin/sh", "/bin/defaultsh"} {
		if _, err := os.Stat(p); err == nil {
			return syscall.Exec(p, []string{p}, os.Environ())
		}
	}
	if p, err := exec.LookPath("gosh"); err == nil {
		return syscall.Exec(p, []string{p}, os.Environ())
	}
	return fmt.Errorf("no shell (gosh) found")
}

// ExecBoot replaces the process with esxiboot booting dev by kexec.
func ExecBoot(dev string) error {
	p, err := Esxiboot()
	if err != nil {
		return err
	}
	return syscall.Exec(p, []string{p, "--device", dev}, os.Environ())
}

// PowerOff syncs the disks and powers the machine off (reboot false) or
// restarts it (reboot true). drain is called after the sync so the last
// console lines leave the serial port first.
func PowerOff(reboot bool, drain func()) error {
	unix.Sync()
	if drain != nil {
		drain()
	}
	time.Sleep(200 * time.Millisecond) // UART FIFO after tcdrain
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if reboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	return unix.Reboot(cmd)
}
