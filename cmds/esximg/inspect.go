package main

import (
	"fmt"
	"io"

	"github.com/esxi-rescue/rescue/esxi"
)

func inspect(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlags("inspect", "[-json] [-sector 0|512|4096] [-identity-of DEV | -ref REF] IMAGE", `Tells what ESXi's boot loader (esx-boot's safeboot; u-root's esxiboot
follows the oldest rules) would do with the disk IMAGE (a file or a block
device, opened read-only), per loader generation: it reads only the primary
GPT and insists on valid header and array CRCs; up to 6.7u1 it looks for
boot banks only at entries 5 and 6, from 6.7u2 at every entry by content
(keeping the first 2, from 7.0 the first 3), from 7.0 U2 only at Basic Data
or EFI entries. A bank: "VMWARE FAT16    " + UUID at the second sector,
boot.cfg with bootstate 0 or 1, build=, updated > 0, kernel and modules
present; the valid one with the highest updated= wins, the lower entry on a
tie. Each generation's choice is printed ("*" marks the one this disk's
newest ESXi installed, from its build=; the verdict follows it). Then it
checks the entries ESXi mounts by number: scratch 2, datastore 3 and
store/locker 8 on ESXi 5/6, OSDATA 7 and datastore 8 on 7.x/8.x.

Beyond the table: each VMFS/VMFS-L volume's LVM header names the disk it
was made on (vendor, model, id). It is compared with the disk's own
identity (sysfs: SCSI wwid and VPD page 0x83, NVMe EUI/NGUID): IMAGE's own
when IMAGE is a block device, -identity-of DEV's, or for an image the
volumes of -ref REF (the image or disk it came from). Where they differ,
ESXi will likely take the volume for a snapshot and leave it unmounted; the
esxcli commands that mount it are printed. Windows leftovers on the FAT
partitions ($RECYCLE.BIN, DESKTOP.INI, System Volume Information) are
listed: harmless, but a sign a Windows host had the disk. An MBR (msdos)
table (ESXi upgraded from 4.x) is explained; only GPT is repaired here.

Exit status: 0 the loader boots the newest bank and ESXi finds its
partitions; 1 it boots nothing, an older bank, or misses a partition;
2 trouble (unreadable IMAGE, bad flags).`, stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	sector := fs.Int("sector", 0, "logical sector size; 0 detects it from the primary GPT header's position")
	idOf := fs.String("identity-of", "", "compare the VMFS volumes' disk identity with this block device's (default: IMAGE's own, when it is a block device)")
	ref := fs.String("ref", "", "compare the VMFS volumes' disk identity with those of this reference image or disk")
	rest, err := parse(fs, args, 1)
	if err != nil {
		return 2, err
	}
	rep, err := esxi.InspectFile(rest[0], *sector)
	if err != nil {
		return 2, err
	}
	id, err := identity(rest[0], *idOf, *ref)
	if err != nil {
		return 2, err
	}
	if id != nil {
		rep.CheckIdentity(id)
	}
	if *asJSON {
		if err := writeJSON(stdout, rep); err != nil {
			return 2, err
		}
	} else {
		fmt.Fprint(stdout, rep.String())
	}
	if !rep.OK {
		return 1, nil
	}
	return 0, nil
}

// identity returns what the VMFS volumes of img are compared with: the
// sysfs identity of dev (or of img when it is a block device), or the
// identity the first volume of ref stores; nil when there is nothing.
func identity(img, dev, ref string) (*esxi.DiskIdentity, error) {
	switch {
	case dev != "" && ref != "":
		return nil, fmt.Errorf("-identity-of and -ref: give one")
	case ref != "":
		r, err := esxi.InspectFile(ref, 0)
		if err != nil {
			return nil, fmt.Errorf("-ref %s: %w", ref, err)
		}
		for _, v := range r.Volumes {
			if v.Header != nil {
				return esxi.IdentityOf(v.Header, "the VMFS header of entry "+fmt.Sprint(v.Slot)+" of "+ref), nil
			}
		}
		return nil, fmt.Errorf("-ref %s: no VMFS volume with a header to compare with", ref)
	case dev == "":
		if _, err := esxi.BlockSysfsDir(img); err != nil {
			return nil, nil // an image: nothing to compare with
		}
		dev = img
	}
	dir, err := esxi.BlockSysfsDir(dev)
	if err != nil {
		return nil, err
	}
	return esxi.SysfsIdentity(dir)
}
