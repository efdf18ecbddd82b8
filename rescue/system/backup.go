package system

import (
	"context"
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
	return s.pickDisk("source", c.BackupSource, facts, target.Need{Purpose: target.ForBackup})
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
