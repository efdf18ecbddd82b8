// Command gptfix repairs a GUID partition table slot for slot.
//
// It restores the slot layout from a reference (-ref) or from the known
// ESXi layouts (-esxi), moves a stranded backup GPT to the end of a grown
// disk, rebuilds a damaged copy from the good one, and fixes header fields,
// CRCs and the protective MBR. It only prints the plan unless -yes is
// given; then it saves an undo file first, writes the backup copy, then
// the primary, and verifies.
//
// Exit status: without -yes, 0 when nothing needs changing and 1 when the
// plan has changes; with -yes, 0 on success; -check: 0 clean, 1 problems;
// 2 on any error.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
)

const usage = `Usage: gptfix [flags] TARGET

Repairs the GPT partition table of TARGET (a disk such as /dev/sda, or an
image file) slot for slot: partition N stays partition N. Without -yes it
only shows what it would change and writes nothing.

Always considered:
  - move the backup GPT to the end of a disk that is bigger than the one
    the table was made for (after restoring an image onto a larger disk),
    and set the last usable LBA accordingly (like sgdisk -e);
  - rebuild a damaged or missing primary GPT from the backup, or the
    backup from the primary;
  - fix header fields, CRC32s and the protective MBR's size field.
A disk smaller than its table is refused unless every partition still fits.

Putting entries back in their slots (the table was rewritten "compacted"
or "sorted", which breaks ESXi: it finds its boot banks at entries 5 and 6):
  -ref REF   take the slot layout from REF: a disk, an image, a layout file
             saved with -save (or gptdiff -save), or an sgdisk --backup file
  -esxi      recognise the ESXi 5.x/6.x/7.x layout (no reference needed);
             refuses when the layout is not clearly ESXi

Writing (-yes): an undo file with every sector about to change is saved
first (see -undo-dir), then the backup copy is written and flushed, then
the primary, then everything is read back and verified. A target with a
mounted partition is refused, and so is one another program has open
(the disk is held with O_EXCL and flock while gptfix writes).

Examples:
  gptfix /dev/sda                      show what is wrong and the plan
  gptfix -esxi /dev/sda                also put ESXi entries back in their slots
  gptfix -ref esxi-orig.img -yes /dev/sda
  gptfix -undo gptfix-undo-sda-20260101T120000.123456789Z-4242.json -yes /dev/sda
  gptfix -undo /media/RESCUE/rescue-logs/SN-20260101T120000Z/report.json -yes /dev/sda
                                       (a rescue run's report holds its undo files)
  gptfix -check disk.img               verify only (exit 0 clean, 1 problems)
  gptfix -check -esxi /dev/sda         also check that ESXi's entries are in their slots

Exit status: 0 nothing to do / success / clean; 1 changes needed (without
-yes) or problems found (-check); 2 error.

Flags:
`

// testPauseNote documents the test-only hook in -h.
var testPauseNote = fmt.Sprintf(`
Test only: when the environment variable %s=SECONDS is set, gptfix
pauses that long after the backup GPT is written and flushed, before the
primary is touched, printing %q (used by the power-cut test).
Never set it in real use.
`, gpt.PauseEnv, gpt.PauseMarker)

// options are the parsed flags.
type options struct {
	ref, undo, save, undoDir string
	esxi, yes, check, json   bool
	noRelocate               bool
	grow, sector             int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gptfix", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.ref, "ref", "", "restore the slot layout from `REF` (disk, image, layout JSON or sgdisk backup)")
	fs.BoolVar(&o.esxi, "esxi", false, "restore the slot layout by recognising the ESXi 5.x/6.x/7.x layout")
	fs.IntVar(&o.grow, "grow", 0, "grow partition `N` (the last one on disk, e.g. 3 = the ESXi datastore) to the end of the disk")
	fs.BoolVar(&o.noRelocate, "no-relocate", false, "keep the backup GPT where it is instead of moving it to the end of the disk")
	fs.IntVar(&o.sector, "sector", 0, "`BYTES` per sector of image files: 512 or 4096 (default: 512, or 4096 when only that shows a GPT; block devices report their own)")
	fs.BoolVar(&o.yes, "yes", false, "apply the plan (without it nothing is written)")
	fs.BoolVar(&o.check, "check", false, "only verify the table, never write: exit 0 when clean, 1 when there are problems\n(with -esxi or -ref, entries out of their slots count as problems too)")
	fs.StringVar(&o.undo, "undo", "", "restore the sectors saved in undo `FILE`, or in the undo file for the disk inside a rescue report (needs -yes to write)")
	fs.StringVar(&o.save, "save", "", "save TARGET's current table to layout `FILE` (JSON) for use as -ref later")
	fs.StringVar(&o.undoDir, "undo-dir", "", "`DIR` for the undo file (default: the current directory, else /tmp)")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, testPauseNote)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "gptfix: exactly one TARGET is needed (see gptfix -h)")
		return 2
	}
	if o.ref != "" && o.esxi {
		fmt.Fprintln(stderr, "gptfix: use either -ref or -esxi, not both")
		return 2
	}
	r := &report{Target: fs.Arg(0)}
	code, err := fix(&o, r, stdout)
	if err != nil {
		r.Error = err.Error()
		code = 2
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else if err != nil {
		fmt.Fprintf(stderr, "gptfix: %v\n", err)
	}
	return code
}

// report is what -json prints.
type report struct {
	Target     string        `json:"target"`
	DiskSize   int64         `json:"disk_size,omitempty"`
	SectorSize int           `json:"sector_size,omitempty"`
	Problems   []string      `json:"problems,omitempty"`
	ESXi       *esxi.Match   `json:"esxi,omitempty"`
	Plan       *planJSON     `json:"plan,omitempty"`
	RefMatch   *gpt.RefMatch `json:"reference_match,omitempty"`
	Undo       *gpt.Undo     `json:"undo,omitempty"`
	UndoFile   string        `json:"undo_file,omitempty"`
	Applied    bool          `json:"applied"`
	Saved      string        `json:"saved_layout,omitempty"`
	Error      string        `json:"error,omitempty"`
	Slots      []slotJSON    `json:"slots_after,omitempty"`
	Verified   *verifiedDoc  `json:"verified,omitempty"`
}

type planJSON struct {
	Empty  bool        `json:"empty"`
	Steps  []string    `json:"steps"`
	Notes  []string    `json:"notes,omitempty"`
	Writes []writeJSON `json:"writes"`
}

type writeJSON struct {
	Region string  `json:"region"`
	LBA    uint64  `json:"lba"`
	Offset int64   `json:"offset"`
	Old    *string `json:"old"` // hex; null when read at apply time
	New    string  `json:"new"`
}

type slotJSON struct {
	Slot  int    `json:"slot"`
	Type  string `json:"type"`
	Name  string `json:"type_name"`
	First uint64 `json:"first_lba"`
	Last  uint64 `json:"last_lba"`
}

type verifiedDoc struct {
	Problems []string `json:"problems"`
}

// out prints human text unless -json.
type out struct {
	w    io.Writer
	json bool
}
