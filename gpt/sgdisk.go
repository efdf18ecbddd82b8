package gpt

import (
	"bytes"
	"fmt"
	"io"
)

// sgdisk's --backup file (GPT fdisk's SaveGPTBackup) is, in 512-byte
// blocks whatever the disk's sector size: the protective MBR, the primary
// header, the backup header, then the primary entry array
// (NumEntries*EntrySize bytes). sgdisk recomputes the CRCs before saving,
// and keeps only one array since both should be the same.
const sgdiskBlock = 512

// ReadSgdiskBackup reads an `sgdisk --backup` file into a Table, guessing
// the disk's sector size from the header (see ReadSgdiskBackupSectors).
func ReadSgdiskBackup(r io.Reader) (*Table, error) { return ReadSgdiskBackupSectors(r, 0) }

// ReadSgdiskBackupSectors reads an `sgdisk --backup` file into a Table.
// The file does not record the disk's sector size; sectorSize gives it
// (512 or 4096), or 0 to infer it from the header: the primary array must
// end before FirstUsableLBA, which for a 4Kn disk's usual FirstUsableLBA
// of 6 only 4096-byte sectors allow. The disk size is taken from the
// backup header's MyLBA (the last LBA of the disk the backup was made
// on). The headers and array are placed on a virtual disk of that size
// and read with Read, so every check of Read applies.
func ReadSgdiskBackupSectors(r io.Reader, sectorSize int) (*Table, error) {
	if sectorSize != 0 && sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("gpt: sector size %d is not supported (512 or 4096)", sectorSize)
	}
	data, err := io.ReadAll(io.LimitReader(r, 3*sgdiskBlock+MaxArrayBytes+1))
	if err != nil {
		return nil, fmt.Errorf("gpt: reading sgdisk backup: %w", err)
	}
	if len(data) < 3*sgdiskBlock {
		return nil, fmt.Errorf("gpt: sgdisk backup: %d bytes, too short (needs at least %d)", len(data), 3*sgdiskBlock)
	}
	mbr, ph, bh := data[:sgdiskBlock], data[sgdiskBlock:2*sgdiskBlock], data[2*sgdiskBlock:3*sgdiskBlock]
	if string(ph[:8]) != Signature || string(bh[:8]) != Signature {
		return nil, fmt.Errorf("gpt: not an sgdisk backup file (no GPT headers at bytes 512 and 1024)")
	}
	p, b := ParseHeader(ph), ParseHeader(bh)
	if !validEntrySize(p.EntrySize) || p.NumEntries == 0 || uint64(p.NumEntries)*uint64(p.EntrySize) > MaxArrayBytes {
		return nil, fmt.Errorf("gpt: sgdisk backup: %d entries of %d bytes is not a valid entry array", p.NumEntries, p.EntrySize)
	}
	n := int(p.NumEntries) * int(p.EntrySize)
	arr := data[3*sgdiskBlock:]
	if len(arr) != n {
		return nil, fmt.Errorf("gpt: sgdisk backup: %d bytes of entry array, the header says %d", len(arr), n)
	}
	if sectorSize == 0 {
		sectorSize = 512
		if p.FirstUsableLBA < 2+arraySectors(p, 512) && p.FirstUsableLBA >= 2+arraySectors(p, 4096) {
			sectorSize = 4096
		}
	}
	ss := int64(sectorSize)
	last := b.MyLBA
	if last < 2 || last > uint64(maxDiskBytes/ss)-1 {
		return nil, fmt.Errorf("gpt: sgdisk backup: the backup header's LBA %d does not give a plausible disk size", last)
	}
	size := int64(last+1) * ss
	v := &virtualDisk{size: size}
	m := make([]byte, sectorSize)
	copy(m, mbr)
	v.put(0, m)
	for _, c := range []struct {
		h   Header
		raw []byte
		lba uint64
	}{{p, ph, 1}, {b, bh, last}} {
		if c.h.EntryLBA >= last || c.h.EntryLBA > (uint64(size)-uint64(n))/uint64(ss) {
			return nil, fmt.Errorf("gpt: sgdisk backup: entry array at LBA %d does not fit a disk of %d sectors", c.h.EntryLBA, last+1)
		}
		v.put(int64(c.h.EntryLBA)*ss, arr)
		sec := make([]byte, sectorSize)
		copy(sec, c.raw)
		v.put(int64(c.lba)*ss, sec)
	}
	t, err := Read(v, size, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("gpt: sgdisk backup: %w", err)
	}
	return t, nil
}

// isSgdiskBackup reports whether head (the first bytes of a file) looks
// like an sgdisk backup: GPT headers at bytes 512 and 1024.
func isSgdiskBackup(head []byte) bool {
	return len(head) >= 3*sgdiskBlock && bytes.Equal(head[512:520], []byte(Signature)) && bytes.Equal(head[1024:1032], []byte(Signature))
}
