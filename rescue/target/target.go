// Package target chooses the disk the hands-off flow works on when
// rescue.target=auto: the one disk whose partition table matches the
// image or reference (or, for a restore, the one blank disk big enough),
// or for a fix without a reference the one disk holding an ESXi layout;
// for a backup (rescue.source=auto) the one unmounted disk holding an ESXi
// layout.
// It refuses, and says why for every disk, when there are several or
// none, and never picks the rescue system's own boot medium or a disk
// with mounted file systems.
package target

import (
	"fmt"
	"strings"

	"github.com/esxi-rescue/rescue/rescue/inventory"
)

// Facts is what Examine learned about one disk.
type Facts struct {
	Disk         inventory.Disk `json:"disk"`
	RescueMedium bool           `json:"rescue_medium,omitempty"` // holds the running rescue system
	ReadErr      string         `json:"read_error,omitempty"`    // the disk could not be read
	HasGPT       bool           `json:"has_gpt"`                 // at least one valid GPT copy
	Blank        bool           `json:"blank,omitempty"`         // no GPT and no MBR partition table
	ESXi         string         `json:"esxi,omitempty"`          // recognised ESXi family, "" if none
	ESXiWhy      string         `json:"esxi_why,omitempty"`      // Recognize's explanation
	RefMatch     bool           `json:"ref_match,omitempty"`     // holds the reference's partitions (any slots)
	RefWhy       string         `json:"ref_why,omitempty"`       // Compare's verdict
}

// Purpose says what the chosen disk is for.
type Purpose string

// The purposes of a target.
const (
	ForRestore Purpose = "restore" // the image is written onto it
	ForFix     Purpose = "fix"     // its GPT is repaired (also verify and boot)
	ForBackup  Purpose = "backup"  // it is read into an image (rescue.source)
)

// Need describes the disk wanted.
type Need struct {
	Purpose Purpose
	MinSize int64 // restore: bytes the image's partitions need
	HaveRef bool  // a reference table exists (image or layout file); else ESXi recognition decides
	Writes  bool  // the flow writes to the disk (mounted disks are refused)
}

// Select picks the one disk that fits need, or explains why none or
// several do. why says, in plain words, why the chosen disk was chosen.
func Select(facts []Facts, need Need) (chosen *Facts, why string, err error) {
	var reasons []string
	var fits, blank []*Facts
	for i := range facts {
		f := &facts[i]
		d := f.Disk
		reject := func(format string, args ...any) {
			reasons = append(reasons, fmt.Sprintf("%s: %s", d.Describe(), fmt.Sprintf(format, args...)))
		}
		switch {
		case f.RescueMedium:
			reject("the rescue system's own boot medium")
			continue
		case f.ReadErr != "":
			reject("cannot be read: %s", f.ReadErr)
			continue
		case need.Writes && len(d.Mounted) > 0:
			reject("mounted on %s", strings.Join(d.Mounted, ","))
			continue
		case need.Writes && d.ReadOnly:
			reject("read-only")
			continue
		}
		switch need.Purpose {
		case ForRestore:
			if d.Size < need.MinSize {
				reject("too small (%s, the image needs %s)", inventory.HumanSize(d.Size), inventory.HumanSize(need.MinSize))
				continue
			}
			switch {
			case f.RefMatch:
				fits = append(fits, f)
			case f.Blank:
				blank = append(blank, f)
			case f.HasGPT:
				reject("holds a different partition table (%s)", orDefault(f.RefWhy, "not the image's partitions"))
			default:
				reject("holds data but no GPT (an MBR table or a file system); not overwritten automatically")
			}
		case ForFix:
			switch {
			case !f.HasGPT:
				reject("no GPT")
			case need.HaveRef && f.RefMatch:
				fits = append(fits, f)
			case need.HaveRef:
				reject("its partitions are not the reference's (%s)", orDefault(f.RefWhy, "no match"))
			case f.ESXi != "":
				fits = append(fits, f)
			default:
				reject("not an ESXi layout (%s)", orDefault(f.ESXiWhy, "not recognised"))
			}
		case ForBackup:
			switch {
			case len(d.Mounted) > 0:
				reject("mounted on %s (its image would not be consistent)", strings.Join(d.Mounted, ","))
			case !f.HasGPT:
				reject("no GPT")
			case f.ESXi != "":
				fits = append(fits, f)
			default:
				reject("not an ESXi layout (%s)", orDefault(f.ESXiWhy, "not recognised"))
			}
		default:
			return nil, "", fmt.Errorf("target: unknown purpose %q", need.Purpose)
		}
	}
	list := func(fs []*Facts) string {
		var s []string
		for _, f := range fs {
			s = append(s, f.Disk.Describe())
		}
		return strings.Join(s, "; ")
	}
	explain := func() string {
		if len(reasons) == 0 {
			return "no disks found"
		}
		return strings.Join(reasons, "; ")
	}
	what, key := "holds the image's partitions", "rescue.target"
	if need.Purpose == ForBackup {
		what, key = "holds an ESXi layout", "rescue.source"
	}
	if need.Purpose == ForFix {
		what = "holds the reference's partitions"
		if !need.HaveRef {
			what = "holds an ESXi layout"
		}
	}
	switch {
	case len(fits) == 1:
		return fits[0], fmt.Sprintf("%s is the only disk that %s", fits[0].Disk.Path, what), nil
	case len(fits) > 1:
		return nil, "", fmt.Errorf("%s=auto: %d disks qualify (%s); name one with %s=/dev/...", key, len(fits), list(fits), key)
	case len(blank) == 1:
		return blank[0], fmt.Sprintf("%s is the only blank disk big enough (no disk holds the image's partitions)", blank[0].Disk.Path), nil
	case len(blank) > 1:
		return nil, "", fmt.Errorf("rescue.target=auto: no disk holds the image's partitions and %d blank disks are big enough (%s); name one with rescue.target=/dev/...", len(blank), list(blank))
	}
	return nil, "", fmt.Errorf("%s=auto: no disk %s: %s", key, what, explain())
}

// Named looks up the disk named on the command line (rescue.target=,
// rescue.source=) among facts and refuses it, as Select would, where it
// cannot serve need: the rescue system's own boot medium always; a
// mounted or read-only disk when need writes; a disk too small for a
// restore; a mounted or unreadable disk for a backup. It returns the
// disk's facts, also with the refusal, and nil when no disk is named path.
func Named(facts []Facts, path string, need Need) (*Facts, error) {
	for i := range facts {
		f := &facts[i]
		if f.Disk.Path != path {
			continue
		}
		switch {
		case f.RescueMedium:
			return f, fmt.Errorf("%s is the rescue system's own boot medium", path)
		case need.Writes && len(f.Disk.Mounted) > 0:
			return f, fmt.Errorf("%s is mounted on %s", path, strings.Join(f.Disk.Mounted, ","))
		case need.Purpose == ForBackup && len(f.Disk.Mounted) > 0:
			return f, fmt.Errorf("%s is mounted on %s (its image would not be consistent)", path, strings.Join(f.Disk.Mounted, ","))
		case need.Writes && f.Disk.ReadOnly:
			return f, fmt.Errorf("%s is read-only", path)
		case need.Purpose == ForRestore && f.Disk.Size < need.MinSize:
			return f, fmt.Errorf("%s is too small (%s, the image needs %s)", path,
				inventory.HumanSize(f.Disk.Size), inventory.HumanSize(need.MinSize))
		case need.Purpose == ForBackup && f.ReadErr != "":
			return f, fmt.Errorf("%s cannot be read: %s", path, f.ReadErr)
		}
		return f, nil
	}
	var names []string
	for _, f := range facts {
		names = append(names, f.Disk.Path)
	}
	return nil, fmt.Errorf("%s is not among the disks found (%s)", path, strings.Join(names, ", "))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
