package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/esxi-rescue/rescue/gpt"
)

// source describes where a table came from, for the report and -json.
type source struct {
	Path       string `json:"path"`
	Kind       string `json:"kind"`
	SectorSize int    `json:"sector_size"`
	DiskSize   int64  `json:"disk_size"`
}

func describeSource(path string, t *gpt.Table) source {
	kind, err := gpt.DetectKind(path)
	if err != nil {
		kind = "?"
	}
	return source{Path: path, Kind: kind, SectorSize: t.SectorSize, DiskSize: t.DiskSize}
}

func (s source) String() string {
	return fmt.Sprintf("%s (%s, %s, %d-byte sectors)", s.Path, s.Kind, gpt.HumanBytes(s.DiskSize), s.SectorSize)
}

const cellWidth = 44

// cell renders one side of a slot row: type, sector range, size.
func cell(e *gpt.EntryInfo) string {
	if e == nil {
		return "(empty)"
	}
	return fmt.Sprintf("%-14s %s %9s", trunc(e.TypeName, 14), fmt.Sprintf("%-19s", fmt.Sprintf("%d-%d", e.First, e.Last)), gpt.HumanBytes(e.Bytes))
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "~"
}

// report prints the human-readable comparison.
func report(w io.Writer, refPath string, ref *gpt.Table, tgtPath string, tgt *gpt.Table, d *gpt.Diff, rep repair) {
	fmt.Fprintf(w, "Reference: %s\n", describeSource(refPath, ref))
	fmt.Fprintf(w, "Target:    %s\n\n", describeSource(tgtPath, tgt))
	fmt.Fprintln(w, "Partitions by number (slot in the partition table); sectors are first-last:")
	fmt.Fprintf(w, "  %4s  %-*s  %-*s  %s\n", "#", cellWidth, "REFERENCE", cellWidth, "TARGET", "")
	for _, r := range d.Slots {
		mark := " "
		if r.Note != "" {
			mark = "*"
		}
		fmt.Fprintf(w, "%s %4d  %-*s  %-*s  %s\n", mark, r.Slot, cellWidth, cell(r.Ref), cellWidth, cell(r.Target), r.Note)
	}
	if n := lastSlots(ref, tgt); n > len(d.Slots) {
		fmt.Fprintf(w, "  %4s  slots %d-%d are empty in both\n", "", len(d.Slots)+1, n)
	}
	fmt.Fprintln(w)
	switch {
	case d.Same() && rep.Needed:
		fmt.Fprintf(w, "Verdict: SAME SLOTS, BUT THE TARGET NEEDS A REPAIR. %s.\n", capitalize(d.Verdict))
	case d.Same():
		fmt.Fprintf(w, "Verdict: SAME. %s.\n", capitalize(d.Verdict))
	default:
		fmt.Fprintf(w, "Verdict: DIFFERENT. %s.\n", capitalize(d.Verdict))
	}
	if len(d.Moves) > 0 {
		fmt.Fprintln(w, "\nWhy it matters: the data of every partition is still in place, but programs")
		fmt.Fprintln(w, "find partitions by number. ESXi (up to 6.7u1) loads its boot banks only from")
		fmt.Fprintln(w, "partitions 5 and 6 and mounts its other partitions by number too. Put the")
		fmt.Fprintln(w, "entries back in their slots with: gptfix -ref REF TARGET (or gptfix -esxi).")
	}
	var changes []string
	for _, h := range d.Header {
		what := "this matters"
		if h.Expected {
			what = "differs, as expected on a disk of another size"
		}
		changes = append(changes, fmt.Sprintf("%s: %s in the reference, %s in the target (%s)", h.Field, h.Ref, h.Target, what))
	}
	section(w, "Header differences", changes)
	section(w, "Findings on the target", append(problems(d.Findings), sectorHint(tgtPath, tgt)...))
	section(w, "Findings on the reference", append(problems(d.RefFindings), sectorHint(refPath, ref)...))
	section(w, "ESXi on the target, beyond the table", esxiFindings(refPath, tgtPath, tgt))
	switch {
	case rep.Error != "":
		section(w, "gptfix cannot repair the target", []string{rep.Error})
	case rep.Needed:
		section(w, "What gptfix TARGET would repair (run it to see the plan; -slots-only ignores this)", rep.Steps)
	}
}

// sectorHint says when an image without a GPT at LBA 1 has one with the
// other sector size (a 4Kn image read as 512, or the reverse).
func sectorHint(path string, t *gpt.Table) []string {
	if t.Primary != nil {
		return nil
	}
	if kind, _ := gpt.DetectKind(path); kind != gpt.KindImage {
		return nil
	}
	if ss := gpt.GuessSectorSize(path); ss != 0 && ss != t.SectorSize {
		return []string{fmt.Sprintf("%s has a GPT when read with %d-byte sectors: use -sector %d (or -ref-sector for REF)", path, ss, ss)}
	}
	return nil
}

func lastSlots(ts ...*gpt.Table) int {
	n := 0
	for _, t := range ts {
		if s := t.Slots(); len(s) > n {
			n = len(s)
		}
	}
	return n
}

func problems(ps []gpt.Problem) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return s
}

func section(w io.Writer, title string, lines []string) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", title)
	for _, l := range lines {
		fmt.Fprintf(w, "  - %s\n", l)
	}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
