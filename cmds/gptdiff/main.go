// Command gptdiff compares the GPT partition table of a disk or image with
// a reference, slot for slot.
//
// Partition N is the N-th entry of the GPT entry array (the N in
// /dev/sdaN). Ordinary tools list partitions and hide empty slots, so a
// table rewritten with its entries moved to other slots looks the same in
// them; gptdiff shows every slot of both tables side by side and says in
// plain words what moved.
//
// Exit status like diff(1): 0 the tables match slot for slot, 1 they
// differ (or the target's GPT is damaged), 2 trouble.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/esxi-rescue/rescue/gpt"
)

const usage = `Usage: gptdiff [flags] REF TARGET
       gptdiff -save FILE TARGET

Compares the partition table (GPT) of TARGET with REF, slot by slot.

Each GPT partition has a number: its position (slot) in the table. Linux
calls partition 5 of /dev/sda /dev/sda5, and VMware ESXi finds its boot
banks by these numbers. A tool that rewrites the table can keep every
partition exactly where it is on the disk and still change the numbers
(for example by closing up an empty slot). gptdiff shows both tables slot
by slot, empty slots included, and says what changed.

REF and TARGET may each be a disk (/dev/sda), a disk image file, a layout
file saved with -save (or gptfix -save), or an sgdisk --backup file.
Nothing is ever written to them.

Examples:
  gptdiff esxi-orig.img /dev/sda        compare a restored disk with its image
  gptdiff -save sda-layout.json /dev/sda   record a disk's table for later
  gptdiff -json sda-layout.json /dev/sda

Exit status: 0 the tables match slot for slot and the target needs no
repair; 1 they differ, the target's table is damaged, or it needs a repair
gptfix TARGET would make (e.g. the backup table moved to the end of a
bigger disk; -slots-only leaves such repairs out); 2 error.

Flags:
`

type options struct {
	json      bool
	slotsOnly bool
	save      string
	sector    int
	refSector int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("gptdiff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.json, "json", false, "print the comparison as JSON")
	fs.StringVar(&o.save, "save", "", "save TARGET's table as a layout `FILE` (JSON, usable later as REF)")
	fs.IntVar(&o.sector, "sector", 0, "logical sector `size` (512 or 4096) of image files; disks report their own (default 512)")
	fs.BoolVar(&o.slotsOnly, "slots-only", false, "compare the slots only: a target that matches but needs a repair (e.g. its backup GPT moved to the end) counts as the same")
	fs.IntVar(&o.refSector, "ref-sector", 0, "sector `size` of REF when it differs from -sector")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if o.sector != 0 && o.sector != 512 && o.sector != 4096 || o.refSector != 0 && o.refSector != 512 && o.refSector != 4096 {
		fmt.Fprintln(stderr, "gptdiff: -sector must be 512 or 4096")
		return 2
	}
	if o.refSector == 0 {
		o.refSector = o.sector
	}
	var refPath, tgtPath string
	switch {
	case fs.NArg() == 2:
		refPath, tgtPath = fs.Arg(0), fs.Arg(1)
	case fs.NArg() == 1 && o.save != "":
		tgtPath = fs.Arg(0)
	default:
		fs.Usage()
		return 2
	}
	target, err := gpt.LoadReference(tgtPath, o.sector)
	if err != nil {
		fmt.Fprintf(stderr, "gptdiff: target: %v\n", err)
		return 2
	}
	if o.save != "" {
		if err := saveLayout(o.save, target); err != nil {
			fmt.Fprintf(stderr, "gptdiff: %v\n", err)
			return 2
		}
		if target.Slots() == nil {
			fmt.Fprintf(stderr, "gptdiff: warning: %s has no usable GPT; the saved layout records what is there\n", tgtPath)
		}
		if refPath == "" {
			fmt.Fprintf(stdout, "saved the partition table of %s to %s\n", tgtPath, o.save)
			return 0
		}
	}
	ref, err := gpt.LoadReference(refPath, o.refSector)
	if err != nil {
		fmt.Fprintf(stderr, "gptdiff: reference: %v\n", err)
		return 2
	}
	d := gpt.Compare(ref, target)
	var rep repair
	if !o.slotsOnly {
		rep = planRepair(tgtPath, target)
	}
	same := d.Same() && !rep.Needed
	if o.json {
		out := struct {
			Reference source    `json:"reference"`
			Target    source    `json:"target"`
			Same      bool      `json:"same"`
			SameSlots bool      `json:"same_slots"`
			Repair    repair    `json:"repair"`
			Diff      *gpt.Diff `json:"diff"`
			// ESXi is what ESXi would make of the target beyond its
			// table, the same lines the text report prints.
			ESXi []string `json:"esxi,omitempty"`
		}{describeSource(refPath, ref), describeSource(tgtPath, target), same, d.Same(), rep, d,
			esxiFindings(refPath, tgtPath, target)}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "gptdiff: %v\n", err)
			return 2
		}
	} else {
		report(stdout, refPath, ref, tgtPath, target, d, rep)
	}
	if same {
		return 0
	}
	return 1
}

// saveLayout writes t to path through a temporary file, so that an
// existing layout is never left half-written.
func saveLayout(path string, t *gpt.Table) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".gptdiff-*.json")
	if err != nil {
		return fmt.Errorf("saving layout: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := gpt.SaveLayout(tmp, t); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("saving layout: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving layout: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("saving layout: %w", err)
	}
	return nil
}
