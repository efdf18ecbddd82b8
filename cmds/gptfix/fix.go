package main

// This file holds the work behind the flags: planning and writing a fix,
// replaying an undo file, and the small helpers they share.

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
)

func (o out) f(format string, a ...any) {
	if !o.json {
		fmt.Fprintf(o.w, format, a...)
	}
}

func fix(o *options, r *report, stdout io.Writer) (int, error) {
	p := out{stdout, o.json}
	if o.undo != "" {
		return undo(o, r, p)
	}
	dev, err := gpt.OpenDevice(r.Target, o.sector, false)
	if err != nil {
		return 2, err
	}
	defer dev.Close()
	t, err := dev.ReadTable()
	if err != nil {
		return 2, err
	}
	// No GPT at all but an MBR (msdos) table, e.g. an ESXi host upgraded
	// from 4.x: explained and refused, not rebuilt or called damaged GPT.
	if t.Best() == nil {
		if parts, merr := esxi.ParseMBR(dev.File, dev.Size); merr == nil {
			return 2, fmt.Errorf("%s: %s", r.Target, esxi.ExplainMBR(parts).Text)
		}
	}
	r.DiskSize, r.SectorSize = t.DiskSize, t.SectorSize
	r.Problems = problems(t)
	// A valid GPT with the other sector size: nothing may be rebuilt
	// over it (a 4Kn image read as 512 would get a 512-byte table).
	otherSS := dev.OtherSectorGPT()
	if otherSS != 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("sectors: %s also shows a valid GPT when read with %d-byte sectors, not only with the %d-byte sectors used here", r.Target, otherSS, t.SectorSize))
	}
	detected := ""
	if dev.Detected {
		detected = " (found from its GPT; -sector overrides)"
	}
	p.f("%s: %s, %d-byte sectors%s\n", r.Target, sizeText(t.DiskSize), t.SectorSize, detected)

	if o.save != "" {
		if err := saveLayout(o.save, t); err != nil {
			return 2, err
		}
		r.Saved = o.save
		p.f("Saved the current table to %s.\n", o.save)
	}
	if len(r.Problems) == 0 {
		p.f("The partition table has no problems.\n")
	} else {
		p.f("Problems found:\n")
		for _, s := range r.Problems {
			p.f("  - %s\n", s)
		}
	}
	if o.check && o.ref == "" && !o.esxi {
		if len(r.Problems) > 0 {
			p.f("Run gptfix without -check to see the repair plan.\n")
			return 1, nil
		}
		return 0, nil
	}

	opt := gpt.FixOptions{GrowSlot: o.grow, NoRelocate: o.noRelocate}
	switch {
	case o.ref != "":
		ref, err := gpt.LoadReference(o.ref, o.sector)
		if err != nil {
			return 2, fmt.Errorf("reference %s: %w", o.ref, err)
		}
		opt.Ref = ref
		p.f("Reference: %s\n", o.ref)
	case o.esxi:
		m, err := esxi.Recognize(t)
		if err != nil {
			return 2, err
		}
		r.ESXi = m
		opt.SlotMap, opt.SlotMapReason = m.SlotMap, "ESXi "+m.Family+" layout"
		p.f("\n%s", m.Text)
	}
	plan, err := gpt.PlanFix(t, opt)
	if err != nil {
		return 2, err
	}
	if otherSS != 0 && !plan.Empty() {
		return 2, fmt.Errorf("refusing to plan a repair with %d-byte sectors: %s also shows a valid GPT when read with %d-byte sectors, and writing would destroy it; if that is the disk's sector size, run again with -sector %d",
			t.SectorSize, r.Target, otherSS, otherSS)
	}
	if err := plan.ReadOld(dev); err != nil {
		return 2, err
	}
	r.Plan = toPlanJSON(plan)
	for _, s := range plan.Slots() {
		if s.Used() {
			e := s.Entry()
			r.Slots = append(r.Slots, slotJSON{s.Index, e.Type.String(), gpt.TypeName(e.Type), e.First, e.Last})
		}
	}
	p.f("\n%s", plan)
	if m := plan.RefMatch; m != nil {
		r.RefMatch = m
		if m.Partial() {
			p.f("The reference matches only part of this disk: %s.\n", m)
		} else {
			p.f("Every partition of the reference is on this disk and the other way round.\n")
		}
	}
	if plan.Empty() {
		if o.check && plan.RefMatch.Partial() {
			p.f("The disk's partitions differ from the reference's (see the notes above).\n")
			return 1, nil
		}
		if len(r.Problems) > 0 {
			p.f("The problems listed above are not ones gptfix repairs; they need a look by hand.\n")
			if o.check {
				return 1, nil
			}
		}
		return 0, nil
	}
	p.f("\nPartition entries after the repair:\n")
	for _, s := range r.Slots {
		p.f("  %3d  LBA %12d - %-12d %10s  %s\n", s.Slot, s.First, s.Last, sizeText(int64(s.Last-s.First+1)*int64(t.SectorSize)), s.Name)
	}
	if !o.yes || o.check {
		if !o.check {
			p.f("\nNothing was written. Run again with -yes to apply these changes.\n")
		}
		return 1, nil
	}

	// Apply.
	if err := refuseInUse(r.Target); err != nil {
		return 2, err
	}
	dev.Close()
	undoPath, err := undoFile(o.undoDir, r.Target)
	if err != nil {
		return 2, err
	}
	// From here the disk is held exclusively (O_EXCL and flock, see
	// gpt.OpenDevice); the table is read again under that hold and the
	// plan made again, so nothing another program wrote between the first
	// read and the lock can slip through.
	wdev, err := gpt.OpenDevice(r.Target, o.sector, true)
	if err != nil {
		return 2, err
	}
	defer wdev.Close()
	if plan, err = replan(wdev, plan, opt); err != nil {
		return 2, err
	}
	p.f("\nSaving the undo file %s\n", undoPath)
	if err := plan.Apply(wdev, undoPath); err != nil {
		if _, serr := os.Stat(undoPath); serr == nil {
			r.UndoFile = undoPath
		}
		return 2, err
	}
	r.UndoFile, r.Applied = undoPath, true
	after, err := wdev.ReadTable()
	if err != nil {
		return 2, fmt.Errorf("reading the table back: %w", err)
	}
	r.Verified = &verifiedDoc{Problems: problems(after)}
	p.f("Written and verified: backup GPT first, then the primary; both copies read back as planned.\n")
	if err := gpt.RereadPartitions(wdev); err != nil {
		p.f("Warning: %v; the kernel shows the old partitions until the next boot.\n", err)
	}
	if len(r.Verified.Problems) > 0 {
		p.f("Still reported after the repair:\n")
		for _, s := range r.Verified.Problems {
			p.f("  - %s\n", s)
		}
	}
	p.f("To undo: gptfix -undo %s -yes %s\n", undoPath, r.Target)
	return 0, nil
}

// replan reads dev's table again and plans again with opt; it fails
// unless the new plan writes exactly what the shown plan would.
func replan(dev *gpt.Device, shown *gpt.Plan, opt gpt.FixOptions) (*gpt.Plan, error) {
	t, err := dev.ReadTable()
	if err != nil {
		return nil, err
	}
	plan, err := gpt.PlanFix(t, opt)
	if err == nil {
		err = plan.ReadOld(dev)
	}
	if err != nil {
		return nil, fmt.Errorf("the disk changed since its table was read: %w", err)
	}
	same := len(plan.Writes) == len(shown.Writes)
	for i := 0; same && i < len(plan.Writes); i++ {
		a, b := plan.Writes[i], shown.Writes[i]
		same = a.Offset == b.Offset && bytes.Equal(a.New, b.New) && bytes.Equal(a.Old, b.Old)
	}
	if !same {
		return nil, errors.New("the disk changed since its table was read (did another program write to it?); nothing was written, run gptfix again")
	}
	return plan, nil
}

// undo shows or replays an undo file.
func undo(o *options, r *report, p out) (int, error) {
	u, note, err := loadUndo(o.undo, r.Target)
	if err != nil {
		return 2, err
	}
	r.Undo, r.UndoFile = u, o.undo
	if note != "" {
		p.f("%s: %s\n", o.undo, note)
	}
	p.f("%s", u)
	if !o.yes {
		p.f("Nothing was written. Run again with -yes to restore these sectors on %s.\n", r.Target)
		return 1, nil
	}
	if err := refuseInUse(r.Target); err != nil {
		return 2, err
	}
	dev, err := gpt.OpenDevice(r.Target, o.sector, true)
	if err != nil {
		return 2, err
	}
	defer dev.Close()
	if err := gpt.ApplyUndoTo(dev.File, dev.Size, dev.SectorSize, u); err != nil {
		return 2, err
	}
	r.Applied = true
	p.f("Restored %d sector(s) on %s and verified them.\n", len(u.Records), r.Target)
	if err := gpt.RereadPartitions(dev); err != nil {
		p.f("Warning: %v; the kernel shows the old partitions until the next boot.\n", err)
	}
	return 0, nil
}

func refuseInUse(target string) error {
	why, err := gpt.InUse(target)
	if err != nil {
		return err
	}
	if len(why) > 0 {
		return fmt.Errorf("refusing to write to %s: %s; unmount it first", target, strings.Join(why, "; "))
	}
	return nil
}

// undoFile picks a new undo file name: DIR, else the current directory
// when writable, else /tmp.
func undoFile(dir, target string) (string, error) {
	if dir == "" {
		dir = "."
		if f, err := os.CreateTemp(".", ".gptfix-probe-*"); err == nil {
			f.Close()
			os.Remove(f.Name())
		} else {
			dir = os.TempDir()
		}
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("undo directory %s is not a directory", dir)
	}
	return gpt.UndoPath(dir, "gptfix-undo-"+filepath.Base(target)), nil
}

func saveLayout(path string, t *gpt.Table) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := gpt.SaveLayout(f, t); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// problems lists everything found wrong with t, table-level first.
func problems(t *gpt.Table) []string {
	var s []string
	seen := map[string]bool{}
	add := func(ps []gpt.Problem) {
		for _, p := range ps {
			if !seen[p.String()] {
				seen[p.String()] = true
				s = append(s, p.String())
			}
		}
	}
	add(t.Problems)
	for _, c := range []*gpt.Copy{t.Primary, t.Backup} {
		if c != nil {
			add(c.Problems)
		}
	}
	return s
}

func toPlanJSON(p *gpt.Plan) *planJSON {
	j := &planJSON{Empty: p.Empty(), Steps: p.Steps, Notes: p.Notes, Writes: []writeJSON{}}
	for _, w := range p.Writes {
		x := writeJSON{Region: w.Region, LBA: w.LBA, Offset: w.Offset, New: hex.EncodeToString(w.New)}
		if w.Old != nil {
			s := hex.EncodeToString(w.Old)
			x.Old = &s
		}
		j.Writes = append(j.Writes, x)
	}
	return j
}

func sizeText(n int64) string {
	const k = 1024
	switch {
	case n >= k*k*k:
		return fmt.Sprintf("%.1f GiB", float64(n)/(k*k*k))
	case n >= k*k:
		return fmt.Sprintf("%.1f MiB", float64(n)/(k*k))
	}
	return fmt.Sprintf("%d KiB", n/k)
}
