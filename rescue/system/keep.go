package system

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/esxi-rescue/rescue/gpt"
)

// UndoFile is an undo file a step wrote, whole, for the report.
type UndoFile struct {
	Step   string // "fix" or "restore"
	Device string
	File   string // where it is: "/dev/sdb1:/rescue-logs/<run>/<name>" on the stick, else the tmpfs path
	Data   []byte
}

// Undos returns the undo files written so far, in order.
func (s *System) Undos() []UndoFile { return s.undos }

// undoPath picks where a step's undo file goes: into the run's directory
// on the rescue stick (mounted until release is called), so that it is
// on the stick, fsynced, before a sector of the disk is written; else,
// without a stick or when it cannot be written, the tmpfs. prefix names
// the step in the file name ("" for a fix, "restore-" for a restore).
func (s *System) undoPath(prefix, dst string) (path, where string, release func()) {
	// gpt.UndoPath names it with nanoseconds, the pid and a counter, so
	// two steps on one disk within a second never share a file.
	stem := fmt.Sprintf("undo-%s%s", prefix, filepath.Base(dst))
	if s.Keep != nil {
		dir, unmount, err := s.Keep.Mount()
		if err == nil {
			p := gpt.UndoPath(dir, stem)
			return p, s.Keep.Where(filepath.Base(p)), func() {
				if err := unmount(); err != nil {
					s.Con.Printf("keep: WARNING: %v", err)
				}
			}
		}
		s.Con.Printf("keep: WARNING: %v; the undo file goes to the RAM disk and into the report only", err)
	}
	p := gpt.UndoPath(s.TmpDir, "rescue-"+stem)
	return p, p, func() {}
}

// recordUndo reads an undo file a step wrote (if it did) into the run's
// list for the report; where is how the file is shown (on the stick, or
// its tmpfs path). With announce it prints the file's line
// ("<step>: undo file ..."); a step that named the file on the console
// before writing (the fix) passes false, so the line appears once. It
// returns the file's size (0: nothing was written).
func (s *System) recordUndo(step, dst, path, where string, announce bool) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0 // nothing was written (the plan failed before its undo file)
	}
	s.undos = append(s.undos, UndoFile{Step: step, Device: dst, File: where, Data: data})
	if announce {
		s.Con.Printf("%s: undo file %s (%d bytes, also in the report)", step, where, len(data))
	}
	return len(data)
}

// sibling is where a file that a step wrote beside its undo file (path,
// shown as where) is shown: on the stick next to it, else its own path.
func (s *System) sibling(file, path, where string) string {
	if where == path || s.Keep == nil {
		return file
	}
	return s.Keep.Where(filepath.Base(file))
}
