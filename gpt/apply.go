package gpt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// PauseEnv names a test-only environment variable: when it holds a number
// of seconds, Apply stops for that long after the backup GPT is written
// and flushed and before the primary is touched, printing a line with
// PauseMarker to stderr. The QEMU power-cut test kills the machine in
// that window. Never set it in real use.
const PauseEnv = "GPTFIX_TEST_PAUSE"

// PauseMarker starts the line Apply prints when it pauses (see PauseEnv).
const PauseMarker = "GPTFIX: PAUSE after backup write"

// ErrDiskChanged is returned (wrapped) by Apply when the disk no longer
// holds what the plan was made from; nothing has been written then.
var ErrDiskChanged = errors.New("the disk changed since its table was read; read it again and make a new plan")

// Apply writes the plan to dev crash-safely:
//
//  1. read every sector about to change and check it still holds what the
//     plan was made from (else ErrDiskChanged, nothing written);
//  2. save those sectors to a new undo file at undoPath (never
//     overwritten; fsynced with its directory) for ApplyUndo;
//  3. write the backup entry array, then the backup header, and flush;
//  4. write the primary header, the primary entry array and the
//     protective MBR, and flush (the primary header first, so that while
//     its array is half written the primary's CRC check fails and every
//     reader, sgdisk included, takes the complete new backup);
//  5. re-read every written sector and the whole table and verify.
//
// After a crash at any point one of the two copies is whole: until step 3
// ends the old primary is intact; from then on the new backup is.
// Running the same repair again, or ApplyUndo, finishes or reverts it.
func (p *Plan) Apply(dev *Device, undoPath string) error {
	var pause func()
	if v := os.Getenv(PauseEnv); v != "" {
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil || secs < 0 {
			return fmt.Errorf("gpt: %s=%q is not a number of seconds", PauseEnv, v)
		}
		pause = func() {
			fmt.Fprintf(os.Stderr, "%s: backup GPT written and flushed, primary not yet; sleeping %gs (%s is set: test only)\n", PauseMarker, secs, PauseEnv)
			time.Sleep(time.Duration(secs * float64(time.Second)))
		}
	}
	return p.apply(dev.File, dev.Name(), dev.Size, dev.SectorSize, undoPath, pause)
}

// ApplyTo is Apply on any Disk of size bytes with the given sector size,
// without the test pause. name is recorded in the undo file.
func (p *Plan) ApplyTo(d Disk, name string, size int64, sectorSize int, undoPath string) error {
	return p.apply(d, name, size, sectorSize, undoPath, nil)
}

func (p *Plan) apply(d Disk, name string, size int64, ss int, undoPath string, pause func()) error {
	if p.Empty() {
		return nil
	}
	if size != p.DiskSize || ss != p.SectorSize {
		return fmt.Errorf("gpt: %w (the plan is for %d bytes with %d-byte sectors, the disk has %d bytes with %d-byte sectors)",
			ErrDiskChanged, p.DiskSize, p.SectorSize, size, ss)
	}
	if undoPath == "" {
		return errors.New("gpt: no undo file path given; refusing to write without an undo copy")
	}
	// 1. What is on the disk now.
	cur := make([][]byte, len(p.Writes))
	for i, w := range p.Writes {
		cur[i] = make([]byte, ss)
		if err := readAt(d, cur[i], w.Offset); err != nil {
			return fmt.Errorf("gpt: reading the %s at LBA %d: %w", w.Region, w.LBA, err)
		}
		if w.Old != nil && !bytes.Equal(cur[i], w.Old) {
			return fmt.Errorf("gpt: %w (the %s at LBA %d differs)", ErrDiskChanged, w.Region, w.LBA)
		}
	}
	// 2. The undo file, durable before anything is written.
	data, err := MarshalUndo(newUndo(name, size, ss, p.Writes, cur))
	if err != nil {
		return fmt.Errorf("gpt: encoding the undo file: %w", err)
	}
	if err := WriteNewFile(undoPath, data); err != nil {
		return fmt.Errorf("gpt: saving the undo file (nothing was written to the disk): %w", err)
	}
	// 3 and 4. Backup, flush, primary, flush.
	for _, backupSide := range []bool{true, false} {
		n := 0
		for i, w := range p.Writes {
			if w.backup() != backupSide || bytes.Equal(cur[i], w.New) {
				continue
			}
			if err := writeSector(d, w); err != nil {
				return fmt.Errorf("%w; the undo file %s restores the previous state", err, undoPath)
			}
			n++
		}
		what := "primary GPT"
		if backupSide {
			what = "backup GPT"
		}
		if n > 0 {
			if err := syncDev(d, what); err != nil {
				return fmt.Errorf("%w; the undo file %s restores the previous state", err, undoPath)
			}
		}
		if backupSide && pause != nil {
			pause()
		}
	}
	// 5. Verify.
	if err := p.verify(d, size, ss); err != nil {
		return fmt.Errorf("%w; the undo file %s restores the previous state", err, undoPath)
	}
	return nil
}

// verify re-reads the written sectors and the table.
func (p *Plan) verify(d Disk, size int64, ss int) error {
	if err := verifySectors(d, p.Writes, func(w Write) []byte { return w.New }); err != nil {
		return err
	}
	t, err := Read(d, size, ss)
	if err != nil {
		return fmt.Errorf("gpt: verification: reading the table back: %w", err)
	}
	switch {
	case !t.Primary.Valid():
		return fmt.Errorf("gpt: verification failed: the primary GPT is not valid after writing (%s)", problemSummary(t))
	case !t.Backup.Valid() || t.Backup.HeaderLBA != p.backupLBA:
		return fmt.Errorf("gpt: verification failed: the backup GPT at LBA %d is not valid after writing (%s)", p.backupLBA, problemSummary(t))
	case !bytes.Equal(t.Primary.Array, p.array) || !bytes.Equal(t.Backup.Array, p.array):
		return errors.New("gpt: verification failed: the entry arrays read back differ from the planned one")
	case !bytes.Equal(t.Primary.HeaderRaw, p.primaryHdr) || !bytes.Equal(t.Backup.HeaderRaw, p.backupHdr):
		return errors.New("gpt: verification failed: the headers read back differ from the planned ones")
	}
	return nil
}
