// esximg builds ESXi-style boot disk images, damages them the way the field
// does, and tells what an ESXi boot loader would make of a disk.
//
// Synopsis:
//
//	esximg create -version V [-size 8G] [-sector 512|4096] [-media disk|usb] [-system-media-size S] [-upgraded-from V] [-build B] [-seed N] [-alt-bank older|empty] [-f] OUT
//	esximg damage -mode MODE [-size SIZE] [-sector 0|512|4096] SRC [DST]
//	esximg inspect [-json] [-sector 0|512|4096] IMAGE
//
// Run `esximg CMD -h` for the details of each.
//
// Exit codes: 0 success (inspect: the disk boots ESXi correctly), 1 inspect:
// it does not, 2 trouble (bad flags, unreadable files, ...).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/esxi-rescue/rescue/esxi"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `esximg — ESXi-style boot disk images for tests and demos

  esximg create -version V [-size 8G] [-sector 512|4096] [-media disk|usb]
                [-system-media-size min|small|default|max] [-upgraded-from V]
                [-build B] [-seed N] [-alt-bank older|empty] [-f] OUT
      build a sparse disk image with exactly the GPT layout ESXi V writes
  esximg damage -mode MODE [-size SIZE] [-sector 0|512|4096] SRC [DST]
      damage a copy (DST) or the image itself (no DST) the way the field does
  esximg inspect [-json] [-sector 0|512|4096] IMAGE
      tell what each ESXi boot loader generation would do with the disk

'esximg CMD -h' explains each command. Exit codes: 0 ok (inspect: boots
correctly), 1 inspect: does not boot correctly, 2 trouble.
`

// errUsage marks a command-line mistake (exit 2, usage already printed).
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var code int
	var err error
	switch args[0] {
	case "create":
		err = create(args[1:], stdout, stderr)
	case "damage":
		err = damage(args[1:], stdout, stderr)
	case "inspect":
		code, err = inspect(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "esximg: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "esximg %s: %v\n", args[0], err)
		return 2
	}
	return code
}

// newFlags returns a flag set whose -h prints doc and the flags.
func newFlags(name, synopsis, doc string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("esximg "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: esximg %s %s\n\n%s\nflags:\n", name, synopsis, doc)
		fs.PrintDefaults()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string, nargs ...int) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errUsage
	}
	for _, n := range nargs {
		if fs.NArg() == n {
			return fs.Args(), nil
		}
	}
	fs.Usage()
	return nil, errUsage
}

func create(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("create", "-version V [-size 8G] [-sector 512|4096] [-media disk|usb] [-system-media-size S] [-upgraded-from V] [-build B] [-seed N] [-alt-bank older|empty] [-f] OUT", `Writes OUT, a sparse disk image with exactly the GPT layout ESXi V writes
(entry numbers, LBAs, type GUIDs, the empty slot 4 on 5.x/6.x, entries not
in disk order) and contents an ESXi boot loader accepts: FAT system partition
with EFI/BOOT files; boot banks 5 and 6 (FAT16, "VMWARE FAT16    " + UUID at
their second sector, boot.cfg, the stub kernel b.b00 that prints
"ESXI-STUB: booted from bank <uuid>" on COM1 and powers off, modules);
store/locker (8) with packages/, scratch (2), vmkDiagnostic (7, 9) headers,
a VMFS datastore with the magic 0xC001D00D at 1 MiB and "VM data" blocks,
and on 7.0/8.0 an OSDATA VMFS-L. Partitions ESXi creates only on larger media
appear only when -size allows. The installer's options: -media usb (USB
stick or SD card: 5.x/6.x without scratch and datastore, 7.x/8.x only the
entries 1, 5, 6), -system-media-size (7.0 U1c+ systemMediaSize=, caps
OSDATA), -upgraded-from (a 6.x host upgraded from 5.x keeps the 5.x table).
The same flags always give the same bytes.
The primary bank (5) has updated=2; the alternate (6) updated=1 (-alt-bank
older) or no files at all (-alt-bank empty, as after a fresh install).
Prints the bank UUIDs (the bootUUID= values) on stdout.`, stderr)
	version := fs.String("version", "", "ESXi version: "+versionList())
	size := fs.String("size", "8G", "disk size (K, M, G, T are binary units)")
	sector := fs.Int("sector", 512, "logical sector size: 512, or 4096 (ESXi 6.5 and later)")
	seed := fs.Int64("seed", 1, "seed for every GUID, UUID and volume ID")
	alt := fs.String("alt-bank", "older", "alternate boot bank (6): older or empty")
	media := fs.String("media", "disk", "medium: disk, or usb (USB stick or SD card)")
	sms := fs.String("system-media-size", "", "7.0/8.0 systemMediaSize=: min, small, default or max")
	from := fs.String("upgraded-from", "", "version first installed, when an upgrade kept its table (e.g. 5.0 for a 6.x host)")
	build := fs.String("build", "", "build= of the primary bank (default: the version's GA build), e.g. 6.7.0-13006603 for 6.7 U2, whose loader scans")
	force := fs.Bool("f", false, "overwrite OUT if it exists")
	rest, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	n, err := esxi.ParseSize(*size)
	if err != nil {
		return err
	}
	if *version == "" {
		fmt.Fprintln(stderr, "esximg create: -version is required")
		fs.Usage()
		return errUsage
	}
	opt := esxi.CreateOptions{Version: esxi.Version(*version), Size: n, SectorSize: *sector, Seed: *seed, AltBank: *alt, Overwrite: *force,
		Media: esxi.Media(*media), SystemMediaSize: *sms, UpgradedFrom: esxi.Version(*from), Build: *build}
	if err := esxi.Create(rest[0], opt); err != nil {
		return err
	}
	parts, err := esxi.LayoutFor(opt.Spec())
	if err != nil {
		return err
	}
	var slots []string
	for _, p := range parts {
		slots = append(slots, fmt.Sprint(p.Slot))
	}
	fmt.Fprintf(stdout, "%s: ESXi %s on a %s, %d bytes, %d-byte sectors, %d partitions (entries in disk order: %s)\n",
		rest[0], *version, opt.Spec().Media, n, *sector, len(parts), strings.Join(slots, ","))
	for _, slot := range []int{5, 6} {
		fmt.Fprintf(stdout, "bank %d: bootUUID=%s updated=%d\n", slot, opt.BankUUID(slot), opt.Updated(slot))
	}
	return nil
}

func versionList() string {
	var s []string
	for _, v := range esxi.Versions {
		s = append(s, string(v))
	}
	return strings.Join(s, ", ")
}

// writeJSON prints v indented.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
