package main

import (
	"fmt"
	"io"
	"os"

	"github.com/esxi-rescue/rescue/esxi"
)

func inspect(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlags("inspect", "[-json] [-sector 0|512|4096] IMAGE", `Tells what ESXi's boot loader (esx-boot's safeboot; u-root's esxiboot
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

Exit status: 0 the loader boots the newest bank and ESXi finds its
partitions; 1 it boots nothing, an older bank, or misses a partition;
2 trouble (unreadable IMAGE, bad flags).`, stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	sector := fs.Int("sector", 0, "logical sector size; 0 detects it from the primary GPT header's position")
	rest, err := parse(fs, args, 1)
	if err != nil {
		return 2, err
	}
	f, err := os.Open(rest[0])
	if err != nil {
		return 2, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 2, err
	}
	rep, err := esxi.Inspect(f, size, *sector)
	if err != nil {
		return 2, err
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
