package system

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/inventory"
	"github.com/esxi-rescue/rescue/rescue/target"
)

// Source resolves rescue.source= (implements flow.Backuper): a named
// device, or with auto the one unmounted disk holding an ESXi layout;
// never the rescue system's own medium, never a mounted disk.
func (s *System) Source(ctx context.Context, c *cmdline.Config) (string, any, error) {
	var facts []target.Facts
	for _, d := range s.disks {
		facts = append(facts, target.Examine(d, nil, s.medium))
	}
	if c.BackupSource != cmdline.TargetAuto {
		for _, f := range facts {
			if f.Disk.Path != c.BackupSource {
				continue
			}
			switch {
			case f.RescueMedium:
				return "", f, fmt.Errorf("%s is the rescue system's own boot medium", c.BackupSource)
			case len(f.Disk.Mounted) > 0:
				return "", f, fmt.Errorf("%s is mounted on %s (its image would not be consistent)", c.BackupSource, strings.Join(f.Disk.Mounted, ","))
			case f.ReadErr != "":
				return "", f, fmt.Errorf("%s cannot be read: %s", c.BackupSource, f.ReadErr)
			}
			s.Con.Printf("source: %s (named on the command line)", f.Disk.Describe())
			return f.Disk.Path, f, nil
		}
		var names []string
		for _, d := range s.disks {
			names = append(names, d.Path)
		}
		return "", nil, fmt.Errorf("%s is not among the disks found (%s)", c.BackupSource, strings.Join(names, ", "))
	}
	chosen, why, err := target.Select(facts, target.Need{Purpose: target.ForBackup})
	if err != nil {
		return "", facts, err
	}
	s.Con.Printf("source: %s", why)
	return chosen.Disk.Path, map[string]any{"chosen": chosen.Disk.Path, "why": why, "disks": facts}, nil
}

// Backup writes the image of src to rescue.dest= (implements
// flow.Backuper) as imgcopy -compress does: the image, its .bmap, .sha256
// and .gpt.json under temporary names published at the end, read back and
// checked; an existing image is refused unless rescue.overwrite=yes.
func (s *System) Backup(ctx context.Context, c *cmdline.Config, src string) (any, error) {
	if err := s.loadCred(ctx, c); err != nil {
		return nil, err
	}
	opt := imaging.Options{
		Src: src, Dst: c.BackupDest, Compress: c.Compress, Yes: c.Overwrite, Verify: s.VerifyCopy,
		Progress: s.Con, ProgressMode: imaging.ProgressPlain, ProgressInterval: 10 * time.Second,
		Log: s.Con.Printf, Cred: s.cred, OnProgress: s.OnProgress,
	}
	dest := cred.Scrub(c.BackupDest)
	s.Con.Printf("backup: %s -> %s (%s)", src, dest, c.Compress)
	res, err := imaging.Copy(ctx, opt)
	if err != nil {
		return res, err
	}
	s.Con.Printf("backup: %s read in %.0fs (sha256 %s, verified %v), published at %s",
		inventory.HumanSize(res.Bytes), res.Duration.Seconds(), res.SHA256, res.Verified, dest)
	return res, nil
}
