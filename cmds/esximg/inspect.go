package main

import (
	"fmt"
	"io"
	"os"

	"github.com/esxi-rescue/rescue/esxi"
)

func inspect(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlags("inspect", "[-json] [-sector 0|512|4096] IMAGE", `Tells what an ESXi 5/6 boot loader (esx-boot's safeboot; u-root's esxiboot
follows the same rules) would do with the disk IMAGE (a file or a block
device, opened read-only): it reads only the primary GPT and insists on
valid header and array CRCs; it looks for boot banks only at entries 5 and
6 (Basic Data or EFI type, "VMWARE FAT16    " + UUID at the second sector,
boot.cfg with bootstate 0 or 1, build=, updated > 0, kernel and modules
present) and boots the valid one with the highest updated=. Boot banks at
other entries are found by content and reported, since ESXi would not see
them. Then it checks the entries ESXi mounts by number: scratch 2,
datastore 3 and store/locker 8 on ESXi 5/6 (OSDATA 7, datastore 8 on 7.x).

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
