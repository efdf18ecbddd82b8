package main

import (
	"github.com/esxi-rescue/rescue/gpt"
)

// repair is what gptfix would do to the target on its own (no reference,
// no slot map: backup relocation, header, CRC and protective MBR fixes),
// so that gptdiff calls a target SAME only when nothing is to be done.
type repair struct {
	Checked bool     `json:"checked"`         // false for layout files and sgdisk backups (no disk to repair)
	Needed  bool     `json:"needed"`          // gptfix would write something
	Steps   []string `json:"steps,omitempty"` // what it would change
	Error   string   `json:"error,omitempty"` // why gptfix cannot repair it
}

// planRepair plans gptfix's repair of the target t read from path. Layout
// files and sgdisk backups describe a table, not a disk: nothing to check.
func planRepair(path string, t *gpt.Table) repair {
	if kind, err := gpt.DetectKind(path); err != nil || (kind != gpt.KindImage && kind != gpt.KindDevice) {
		return repair{}
	}
	r := repair{Checked: true}
	plan, err := gpt.PlanFix(t, gpt.FixOptions{})
	if err == nil {
		var dev *gpt.Device
		if dev, err = gpt.OpenDevice(path, t.SectorSize, false); err == nil {
			err = plan.ReadOld(dev) // drops the writes the disk already holds
			dev.Close()
		}
	}
	switch {
	case err != nil:
		r.Needed, r.Error = true, err.Error()
	case !plan.Empty():
		r.Needed, r.Steps = true, plan.Steps
	}
	return r
}
