package main

import (
	"fmt"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
)

// esxiFindings says in plain words what ESXi would make of the target
// beyond its table, when the target is a disk or an image with an ESXi
// layout: what each boot loader generation would boot when they differ,
// the VMFS volumes taken for snapshots (their header names another disk
// than the target's own, or for an image than the reference's), Windows
// leftovers, an MBR (msdos) ESXi disk.
func esxiFindings(refPath, tgtPath string, tgt *gpt.Table) []string {
	kind, _ := gpt.DetectKind(tgtPath)
	if kind != gpt.KindDevice && kind != gpt.KindImage {
		return nil
	}
	rep, err := esxi.InspectFile(tgtPath, tgt.SectorSize)
	if err != nil {
		return nil
	}
	if rep.MBR != nil {
		return []string{rep.MBR.Text}
	}
	if _, err := esxi.Recognize(tgt); err != nil {
		return nil
	}
	out := rep.BankLines()
	if rep.LoadersDiffer() {
		for _, l := range rep.Loaders {
			out = append(out, l.Text)
		}
	}
	if id := identityFor(refPath, tgtPath, kind); id != nil {
		rep.CheckIdentity(id)
	}
	out = append(out, rep.Warnings...)
	for _, w := range rep.WindowsSigns {
		out = append(out, "Windows leftovers, harmless but a sign a Windows host had the disk: "+w)
	}
	return out
}

// identityFor is what the target's VMFS volumes are compared with: a disk
// target's own identity; for an image target, the reference disk's, or
// the identity the reference image's first VMFS volume stores.
func identityFor(refPath, tgtPath, tgtKind string) *esxi.DiskIdentity {
	if tgtKind == gpt.KindDevice {
		return sysfsIdentity(tgtPath)
	}
	refKind, _ := gpt.DetectKind(refPath)
	switch refKind {
	case gpt.KindDevice:
		return sysfsIdentity(refPath)
	case gpt.KindImage:
		rep, err := esxi.InspectFile(refPath, 0)
		if err != nil {
			return nil
		}
		for _, v := range rep.Volumes {
			if v.Header != nil {
				return esxi.IdentityOf(v.Header, fmt.Sprintf("the VMFS header of entry %d of %s", v.Slot, refPath))
			}
		}
	}
	return nil
}

func sysfsIdentity(dev string) *esxi.DiskIdentity {
	dir, err := esxi.BlockSysfsDir(dev)
	if err != nil {
		return nil
	}
	id, err := esxi.SysfsIdentity(dir)
	if err != nil {
		return nil
	}
	return id
}
