package gpt

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// LoadReference reads a reference table from path, which may be a block
// device, a disk image, a layout file written by SaveLayout (JSON), or an
// `sgdisk --backup` file. sectorSize applies to images and sgdisk backups
// (0: 512 for images, inferred for sgdisk backups); devices report their
// own and layout files record theirs.
func LoadReference(path string, sectorSize int) (*Table, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("gpt: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return ReadFile(path, sectorSize)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gpt: %w", err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("gpt: %s: %w", path, err)
	}
	head = head[:n]
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("gpt: %s: %w", path, err)
	}
	switch {
	case bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte("{")):
		t, err := LoadLayout(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return t, nil
	case isSgdiskBackup(head) && fi.Size() <= 3*sgdiskBlock+MaxArrayBytes && !hasImageTail(f, fi.Size()):
		t, err := ReadSgdiskBackupSectors(f, sectorSize)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return t, nil
	}
	return ReadFile(path, sectorSize)
}

// hasImageTail tells a tiny disk image from an sgdisk backup of the same
// size: an sgdisk backup is exactly 1536 bytes plus the array its primary
// header declares.
func hasImageTail(f *os.File, size int64) bool {
	h := make([]byte, 512)
	if _, err := f.ReadAt(h, 512); err != nil {
		return true
	}
	p := ParseHeader(h)
	ok := int64(3*sgdiskBlock)+int64(p.NumEntries)*int64(p.EntrySize) == size
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return true
	}
	return !ok
}
