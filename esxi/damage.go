package esxi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
)

// DamageModes lists the modes Damage knows, each what happens in the field.
var DamageModes = map[string]string{
	"windows":        "raw copy onto a larger disk, then the entry array rewritten compacted (used entries moved up to close gaps, order kept), the backup GPT written at the new end (the old one left where the old disk ended), protective MBR resized, every CRC valid, $RECYCLE.BIN/DESKTOP.INI and DESKTOP.INI dropped into the FAT partitions of type Basic Data: the incident",
	"stale-backup":   "raw copy onto a larger disk, nothing else changed: the backup GPT is stranded where the old disk ended",
	"sorted":         "entries sorted by start sector into slots 1..n (what sgdisk -s and some editors do), both copies rewritten, CRCs valid",
	"primary-crc":    "the primary header's CRC broken (the stored value is wrong)",
	"backup-crc":     "the backup header's CRC broken",
	"primary-zeroed": "the primary header and entry array zeroed (the protective MBR kept)",
	"shrunk":         "raw copy onto a disk smaller than the table says: the end of the last partition and the backup GPT are gone",
}

// DamageOptions tunes Damage.
type DamageOptions struct {
	// Source, when set, is copied (sparsely) to the damaged path first,
	// which must not exist unless Overwrite; otherwise path is damaged in
	// place.
	Source    string
	Overwrite bool
	// Size is the size of the new disk for windows, stale-backup and shrunk
	// (also honoured by the other modes). 0 means: 1 GiB larger than the
	// source for windows and stale-backup, 1 GiB smaller for shrunk, the
	// same size otherwise.
	Size int64
	// SectorSize is the logical sector size, 0 to detect it from where the
	// primary GPT header is.
	SectorSize int
}

// Damage damages the ESXi disk image at path (or a copy of opt.Source
// written to path) the way mode says; see DamageModes. It writes GPT bytes
// itself, without the project's gpt package or go-diskfs's GPT code, so a
// bug in the repair code cannot hide behind the same bug here.
func Damage(path string, mode string, opt DamageOptions) (err error) {
	if _, ok := DamageModes[mode]; !ok {
		return fmt.Errorf("esxi: unknown damage mode %q (known: %s)", mode, strings.Join(damageModeNames(), ", "))
	}
	var f *os.File
	if opt.Source != "" {
		f, err = copyForDamage(path, mode, opt)
	} else {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
		if err == nil {
			err = resizeInPlace(f, mode, opt.Size)
		}
	}
	if err != nil {
		return fmt.Errorf("esxi: damage %s: %w", mode, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil && opt.Source != "" {
			os.Remove(path)
		}
	}()
	if err := damageFile(f, mode, opt.SectorSize); err != nil {
		return fmt.Errorf("esxi: damage %s of %s: %w", mode, path, err)
	}
	return f.Sync()
}

func damageModeNames() []string {
	var names []string
	for m := range DamageModes {
		names = append(names, m)
	}
	sort.Strings(names)
	return names
}

// newSize is the damaged disk's size for a source of srcSize bytes.
func newSize(mode string, srcSize, want int64) int64 {
	if want > 0 {
		return want
	}
	switch mode {
	case "windows", "stale-backup":
		return srcSize + 1<<30
	case "shrunk":
		return srcSize - 1<<30
	}
	return srcSize
}

func checkSize(mode string, srcSize, size int64) error {
	switch {
	case size <= 0:
		return fmt.Errorf("new size %d is not positive", size)
	case (mode == "windows" || mode == "stale-backup") && size <= srcSize:
		return fmt.Errorf("mode %s needs a larger disk: %d <= %d bytes", mode, size, srcSize)
	case mode == "shrunk" && size >= srcSize:
		return fmt.Errorf("mode shrunk needs a smaller disk: %d >= %d bytes", size, srcSize)
	}
	return nil
}

func copyForDamage(path, mode string, opt DamageOptions) (*os.File, error) {
	src, err := os.Open(opt.Source)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", opt.Source)
	}
	size := newSize(mode, st.Size(), opt.Size)
	if err := checkSize(mode, st.Size(), size); err != nil {
		return nil, err
	}
	flags := os.O_RDWR | os.O_CREATE | os.O_EXCL
	if opt.Overwrite {
		flags = os.O_RDWR | os.O_CREATE | os.O_TRUNC
	}
	if same, _ := sameFile(opt.Source, path); same {
		return nil, errors.New("source and destination are the same file")
	}
	dst, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	if err := dst.Truncate(size); err != nil {
		dst.Close()
		return nil, err
	}
	if err := copyRange(dst, src, 0, 0, min(size, st.Size())); err != nil {
		dst.Close()
		return nil, err
	}
	return dst, nil
}

func sameFile(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}

func resizeInPlace(f *os.File, mode string, want int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (Damage only works on images)", f.Name())
	}
	size := newSize(mode, st.Size(), want)
	if err := checkSize(mode, st.Size(), size); err != nil {
		return err
	}
	if size != st.Size() {
		return f.Truncate(size)
	}
	return nil
}

// damageFile applies mode to an image already at its new size.
func damageFile(f *os.File, mode string, ss int) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if ss == 0 {
		if ss, err = detectSectorSize(f); err != nil {
			return err
		}
	}
	if mode == "stale-backup" || mode == "shrunk" {
		return nil // the copy onto a disk of another size is the damage
	}
	prim, err := readRawCopy(f, size, 1, ss)
	if err != nil {
		return fmt.Errorf("primary GPT: %w", err)
	}
	if !prim.headerCRCOK() || !prim.arrayCRCOK() {
		return errors.New("the primary GPT is already damaged (CRC mismatch); damage an intact image")
	}
	lastLBA := uint64(size/int64(ss)) - 1
	switch mode {
	case "primary-crc":
		prim.set32(0x10, prim.u32(0x10)^0xDEADBEEF)
		_, err := f.WriteAt(prim.Hdr, int64(ss))
		return err
	case "primary-zeroed":
		end := int64(prim.entryLBA()+prim.arraySectors()) * int64(ss)
		_, err := f.WriteAt(make([]byte, end-int64(ss)), int64(ss))
		return err
	case "backup-crc":
		back, err := readRawCopy(f, size, prim.altLBA(), ss)
		if err != nil {
			return fmt.Errorf("backup GPT: %w", err)
		}
		back.set32(0x10, back.u32(0x10)^0xDEADBEEF)
		_, err = f.WriteAt(back.Hdr, int64(back.LBA)*int64(ss))
		return err
	case "sorted":
		arr := rearrange(prim, true)
		back, err := readRawCopy(f, size, prim.altLBA(), ss)
		if err != nil {
			return fmt.Errorf("backup GPT: %w", err)
		}
		back.Array, prim.Array = arr, append([]byte(nil), arr...)
		back.seal()
		prim.seal()
		return writeBackupFirst(f, back, prim)
	case "windows":
		return damageWindows(f, prim, lastLBA)
	}
	return fmt.Errorf("mode %s not handled", mode)
}

// writeBackupFirst writes the backup copy, fsyncs, then writes the
// primary: the order every writer of both copies uses.
func writeBackupFirst(f *os.File, back, prim *rawCopy) error {
	if err := writeRawCopy(f, back); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return writeRawCopy(f, prim)
}

// rearrange returns a new entry array with the used entries moved up to
// slots 1..n: in array order (compacted), or sorted by first LBA.
func rearrange(c *rawCopy, byLBA bool) []byte {
	es := int(c.entrySize())
	used := c.entries()
	if byLBA {
		sort.SliceStable(used, func(i, j int) bool { return used[i].First < used[j].First })
	}
	arr := make([]byte, len(c.Array))
	for i, e := range used {
		copy(arr[i*es:], e.Raw)
	}
	return arr
}

// damageWindows does what the incident's Windows did to a disk that grew:
// compacted array, headers for the new size, backup at the new end, a
// protective MBR for the new size, litter in the FAT partitions.
func damageWindows(f *os.File, prim *rawCopy, lastLBA uint64) error {
	prim.Array = rearrange(prim, false)
	prim.set64(0x20, lastLBA)
	prim.set64(0x30, lastLBA-prim.arraySectors()-1)
	back := prim.clone()
	back.LBA = lastLBA
	back.set64(0x18, lastLBA)
	back.set64(0x20, 1)
	back.set64(0x48, lastLBA-prim.arraySectors())
	prim.seal()
	back.seal()
	if err := writeBackupFirst(f, back, prim); err != nil {
		return err
	}
	// Protective MBR: partition 1 covers LBA 1 to the end (capped).
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		return err
	}
	if mbr[446+4] == 0xEE {
		binary.LittleEndian.PutUint32(mbr[446+12:], uint32(min(lastLBA, 0xFFFFFFFF)))
		if _, err := f.WriteAt(mbr[446:462], 446); err != nil {
			return err
		}
	}
	return litterFATs(f, prim)
}

// Windows' litter.
var windowsFiles = map[string][]byte{
	"/$RECYCLE.BIN/DESKTOP.INI": []byte("[.ShellClassInfo]\r\nCLSID={645FF040-5081-101B-9F08-00AA002F954E}\r\nLocalizedResourceName=@%SystemRoot%\\system32\\shell32.dll,-8964\r\n"),
	"/DESKTOP.INI":              []byte("[.ShellClassInfo]\r\nIconResource=C:\\Windows\\System32\\imageres.dll,-30\r\n"),
}

// litterFATs drops windowsFiles into every Basic Data partition holding a
// FAT, through go-diskfs's FAT code.
func litterFATs(f *os.File, c *rawCopy) error {
	ss := int64(len(c.Hdr))
	b := file.New(f, false)
	defer reproducibleTimes()()
	for _, e := range c.entries() {
		if e.Type != TypeBasicData {
			continue
		}
		start, size := int64(e.First)*ss, int64(e.Last-e.First+1)*ss
		fs, err := readFAT(b, start, size)
		if err != nil {
			continue // not a FAT (Windows would not mount it either)
		}
		for _, name := range []string{"/$RECYCLE.BIN/DESKTOP.INI", "/DESKTOP.INI"} {
			if err := writeFile(fs, name, windowsFiles[name]); err != nil {
				return fmt.Errorf("partition %d: %w", e.Slot, err)
			}
		}
		if err := fixFAT32(f, start); err != nil {
			return fmt.Errorf("partition %d: %w", e.Slot, err)
		}
	}
	return nil
}
