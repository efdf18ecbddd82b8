package qemutests

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Broken is an ESXi disk image and a damaged copy of it, made with esximg.
type Broken struct {
	Version    string
	SectorSize int
	Original   string  // esximg create output
	Damaged    string  // esximg damage output (the disk the VM gets)
	OrigGPT    *RawGPT // the original's GPT bytes, the reference for "fixed"
	// RightBank is the boot-bank UUID (32 hex digits, as esxiboot passes it
	// in bootUUID=) of the bank ESXi should boot: entry 5 of the original.
	RightBank string
	// AltBank is the UUID of the alternate bank (entry 6 of the original),
	// which holds an older ESXi unless AltEmpty.
	AltBank  string
	AltEmpty bool
}

// BrokenOptions says what disk to build and how to damage it.
type BrokenOptions struct {
	Version          string // esximg create -version
	Size, DamageSize string // esximg create -size, esximg damage -size ("" = same)
	Mode             string // esximg damage -mode
	SectorSize       int    // 512 (0) or 4096
	AltBank          string // esximg create -alt-bank ("" = esximg's default)
	Media            string // esximg create -media ("" = disk)
}

// Image is an ESXi disk image made with esximg create.
type Image struct {
	Path       string
	SectorSize int
	GPT        *RawGPT
	RightBank  string // UUID of entry 5's boot bank (see Broken.RightBank)
}

// MakeImage runs esximg create and reads what the checks need; extra are
// more esximg create flags (e.g. "-media", "usb").
func MakeImage(tools *Tools, path, version, size string, sectorSize int, altBank string, extra ...string) (*Image, error) {
	if sectorSize == 0 {
		sectorSize = 512
	}
	args := []string{"create", "-version", version, "-size", size, "-sector", strconv.Itoa(sectorSize)}
	if altBank != "" {
		args = append(args, "-alt-bank", altBank)
	}
	args = append(args, extra...)
	if _, err := tools.Run("esximg", append(args, path)...); err != nil {
		return nil, err
	}
	g, err := ReadRawGPT(path, sectorSize)
	if err != nil {
		return nil, err
	}
	img := &Image{Path: path, SectorSize: sectorSize, GPT: g}
	if img.RightBank, err = BankUUID(path, g.Primary, sectorSize, 5); err != nil {
		return nil, err
	}
	return img, nil
}

// MakeBroken builds the original image and its damaged copy in dir with the
// esximg tool, and reads what the checks need from the original.
func MakeBroken(tools *Tools, dir string, o BrokenOptions) (*Broken, error) {
	var extra []string
	if o.Media != "" {
		extra = []string{"-media", o.Media}
	}
	orig, err := MakeImage(tools, filepath.Join(dir, "esxi-"+o.Version+"-original.img"), o.Version, o.Size, o.SectorSize, o.AltBank, extra...)
	if err != nil {
		return nil, err
	}
	b := &Broken{
		Version:    o.Version,
		SectorSize: orig.SectorSize,
		Original:   orig.Path,
		Damaged:    filepath.Join(dir, "esxi-"+o.Version+"-"+o.Mode+".img"),
		OrigGPT:    orig.GPT,
		RightBank:  orig.RightBank,
		AltEmpty:   o.AltBank == "empty",
	}
	if b.AltBank, err = BankUUID(orig.Path, orig.GPT.Primary, orig.SectorSize, 6); err != nil {
		return nil, err
	}
	args := []string{"damage", "-mode", o.Mode}
	if o.DamageSize != "" {
		args = append(args, "-size", o.DamageSize)
	}
	if _, err := tools.Run("esximg", append(args, b.Original, b.Damaged)...); err != nil {
		return nil, err
	}
	return b, nil
}

// BankUUID reads the boot-bank UUID of slot's partition: the 16 bytes after
// "VMWARE FAT16    " in the partition's second sector.
func BankUUID(path string, c *RawCopy, sectorSize, slot int) (string, error) {
	for _, e := range c.UsedEntries() {
		if e.Slot != slot {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		buf := make([]byte, 32)
		if _, err := f.ReadAt(buf, int64(e.First)*int64(sectorSize)+int64(sectorSize)); err != nil {
			return "", err
		}
		if string(buf[:16]) != "VMWARE FAT16    " {
			return "", fmt.Errorf("%s: partition %d has no boot-bank magic", path, slot)
		}
		return hex.EncodeToString(buf[16:]), nil
	}
	return "", fmt.Errorf("%s: no partition %d", path, slot)
}

// EsxibootResult is what u-root's esxiboot did in a VM.
type EsxibootResult struct {
	Exit   int    // esxiboot's exit code (dry run), -1 when it kexec'd
	Loaded string // bootUUID= of the image it loaded ("" if none)
	Booted string // the bank the stub kernel said it was booted from
	Lines  []string
}

var (
	reEsxibootExit = regexp.MustCompile(`ESXIBOOT-TEST: exit (\d+)`)
	reBootUUID     = regexp.MustCompile(`bootUUID=([0-9a-f]{32})`)
	// reEsxibootFailed is esxiboot's own fatal message.
	reEsxibootFailed = regexp.MustCompile(`(?i)failed to (load|boot) ESXi`)
	reStub           = regexp.MustCompile(`ESXI-STUB: booted from bank (\S+)`)
)

// RunEsxiboot boots the rescue kernel with the esxiboot test uinit against
// disk (attached read-only for a dry run) and reports what esxiboot did:
// with dryRun it only loads the ESXi kernel; without, it boots it and the
// stub kernel names its bank.
func RunEsxiboot(ctx context.Context, a *Artifacts, initrd string, disk Disk, dryRun bool, name string, onLine func(string)) (*EsxibootResult, *Running, error) {
	args := "--device /dev/vda"
	if disk.Bus == "ahci" || disk.Bus == "scsi" {
		args = "--device /dev/sda"
	}
	if dryRun {
		args = "--dry-run " + args
		disk.ReadOnly = true
	}
	res := &EsxibootResult{Exit: -1}
	vm := VM{
		Name:    name,
		Kernel:  a.Kernel,
		Initrd:  initrd,
		Cmdline: KernelCmdline(`uroot.uinitargs="` + args + `"`),
		Disks:   []Disk{disk},
		Timeout: Scaled(90 * time.Second),
		OnLine: func(l string) {
			if strings.Contains(l, "ESXIBOOT-TEST") || strings.Contains(l, "esxiboot") || strings.Contains(l, "ESXI-STUB") ||
				strings.Contains(l, "Loaded image") || strings.Contains(l, "ESXi") || strings.Contains(l, "bootUUID") ||
				strings.Contains(l, "FAT-fs") {
				res.Lines = append(res.Lines, l)
			}
			if onLine != nil {
				onLine(l)
			}
		},
	}
	r, err := Start(ctx, vm)
	if err != nil {
		return nil, nil, err
	}
	if dryRun {
		m, err := r.Expect(reEsxibootExit, 0)
		if err != nil {
			return nil, r, err
		}
		res.Exit, _ = strconv.Atoi(m[1])
		if u := reBootUUID.FindStringSubmatch(r.Output()); u != nil {
			res.Loaded = u[1]
		}
		return res, r, r.Wait(Scaled(20 * time.Second))
	}
	m, err := r.Expect(reStub, 0, reEsxibootExit)
	if err != nil {
		return nil, r, fmt.Errorf("%w%s", err, Diagnose(res.Lines))
	}
	res.Booted = m[1]
	if u := reBootUUID.FindStringSubmatch(r.Output()); u != nil {
		res.Loaded = u[1]
	}
	return res, r, r.Wait(Scaled(20 * time.Second))
}

// BeforeFix judges a dry run of esxiboot on the damaged incident disk: it
// must show the incident, i.e. take the alternate bank (an older ESXi) that
// the compaction moved into entry 5, or, when the alternate bank is empty,
// find no boot configuration at all. Anything else (e.g. esxiboot unable
// to mount FAT at all) proves nothing and is reported with a diagnosis.
func BeforeFix(b *Broken, res *EsxibootResult) (string, error) {
	switch {
	case !b.AltEmpty && res.Exit == 0 && res.Loaded == b.AltBank:
		return fmt.Sprintf("esxiboot took partition 5, now the alternate bank %s (an older ESXi), instead of the primary bank %s", b.AltBank, b.RightBank), nil
	case b.AltEmpty && res.Exit != 0 && strings.Contains(strings.Join(res.Lines, "\n"), "boot.cfg"):
		return fmt.Sprintf("esxiboot found no boot configuration at partitions 5 and 6 (exit %d)", res.Exit), nil
	case res.Exit == 0 && res.Loaded == b.RightBank:
		return "", fmt.Errorf("esxiboot found the right bank %s on the damaged disk: the damage is not the incident's", b.RightBank)
	}
	return "", fmt.Errorf("esxiboot did not show the incident (exit %d, loaded %q; right bank %s, alternate %s)%s",
		res.Exit, res.Loaded, b.RightBank, b.AltBank, Diagnose(res.Lines))
}

// Diagnose explains known causes of esxiboot failures found in its output.
func Diagnose(lines []string) string {
	all := strings.Join(lines, "\n")
	var d []string
	if strings.Contains(all, "IO charset ascii not found") {
		d = append(d, "the kernel could not mount the FAT boot banks: Debian's kernel mounts FAT with iocharset=ascii "+
			"(CONFIG_FAT_DEFAULT_IOCHARSET) and the initramfs lacks the nls_ascii module "+
			"(add it to initramfs/modules.txt and load it with vfat, e.g. in rescue/coldplug AlwaysWanted)")
	}
	if strings.Contains(all, "flag provided but not defined: -v") {
		d = append(d, "esxiboot was given single-dash long flags: u-root's unixflag reads -device as -d -e -v -i -c -e; "+
			"call it with --device and --dry-run")
	}
	if regexp.MustCompile(`stat /dev/[a-z]+[0-9]+: no such file`).MatchString(all) {
		d = append(d, "the kernel has no node for a partition the new table has: re-read the partition table "+
			"(BLKRRPART, gpt.RereadPartitions) after writing it")
	}
	if strings.Contains(all, "did not appear") {
		d = append(d, "the disk never appeared: is its driver (virtio_blk, ahci, virtio_scsi) in the initramfs?")
	}
	if len(d) == 0 {
		return ""
	}
	return "\ndiagnosis: " + strings.Join(d, "; ")
}

// KernelCmdline joins kernel command line words after what every boot
// needs: the serial console, no hanging on a panic, and no_timer_check
// (on a loaded TCG host the kernel's IO-APIC timer check can fail and
// panic at 0.03 s: "IO-APIC + timer doesn't work!", seen with 30+
// runnable processes on 2 cores).
func KernelCmdline(words ...string) string {
	return strings.Join(append([]string{"console=ttyS0,115200", "panic=-1", "no_timer_check"}, words...), " ")
}

// DefaultHandsOff is the hard limit of a hands-off boot under KVM (scaled
// for TCG, see Scaled).
const DefaultHandsOff = 3 * time.Minute

// HandsOff boots the rescue system with the given rescue.* words and disks,
// waits for "RESCUE: DONE ok" (failing at once on "RESCUE: FAILED"), and
// then for QEMU to exit (rescue.done=poweroff) unless wantAfter is set, in
// which case it waits for that line instead (e.g. the stub kernel's after
// rescue.done=boot) and returns its match.
func HandsOff(ctx context.Context, vm VM, wantAfter *regexp.Regexp) (*Running, []string, error) {
	if vm.Timeout == 0 {
		vm.Timeout = Scaled(DefaultHandsOff)
	}
	r, err := Start(ctx, vm)
	if err != nil {
		return nil, nil, err
	}
	if _, err := r.Expect(MarkDone, 0, MarkFailed); err != nil {
		return r, nil, fmt.Errorf("%w%s", err, Diagnose(strings.Split(r.Output(), "\n")))
	}
	if wantAfter != nil {
		// After DONE the rescue system hands over (e.g. execs esxiboot);
		// if that fails nobody prints a marker, so do not wait for long.
		m, err := r.Expect(wantAfter, Scaled(90*time.Second), MarkFailed, reEsxibootFailed)
		if err != nil {
			return r, nil, fmt.Errorf("%w%s", err, Diagnose(strings.Split(r.Output(), "\n")))
		}
		r.Wait(Scaled(20 * time.Second))
		return r, m, nil
	}
	return r, nil, r.Wait(Scaled(30 * time.Second))
}
