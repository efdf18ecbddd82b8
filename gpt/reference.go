package gpt

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// Kinds of reference LoadReference accepts (see DetectKind).
const (
	KindDevice = "disk"          // a block device
	KindImage  = "image"         // a disk image file
	KindLayout = "layout file"   // JSON written by SaveLayout
	KindSgdisk = "sgdisk backup" // written by sgdisk --backup
)

// DetectKind tells what path holds: a block device, a layout file (JSON),
// an sgdisk backup (GPT headers at bytes 512 and 1024, and exactly as long
// as the array its header declares), or else a disk image.
func DetectKind(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("gpt: %w", err)
	}
	if fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
		return KindDevice, nil
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("gpt: %s is not a disk, an image or a layout file (%s)", path, fi.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("gpt: %w", err)
	}
	defer f.Close()
	head := make([]byte, 3*sgdiskBlock)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("gpt: %s: %w", path, err)
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte("{")):
		return KindLayout, nil
	case isSgdiskBackup(head):
		p := ParseHeader(head[sgdiskBlock:])
		if int64(3*sgdiskBlock)+int64(p.NumEntries)*int64(p.EntrySize) == fi.Size() {
			return KindSgdisk, nil
		}
	}
	return KindImage, nil
}

// LoadReference reads a table from path, which may be a block device, a
// disk image, a layout file written by SaveLayout (JSON), or an
// `sgdisk --backup` file (see DetectKind). sectorSize applies to images
// and sgdisk backups (0: detected for images as OpenDevice does, inferred
// for sgdisk backups);
// devices report their own and layout files record theirs.
func LoadReference(path string, sectorSize int) (*Table, error) {
	kind, err := DetectKind(path)
	if err != nil {
		return nil, err
	}
	var t *Table
	switch kind {
	case KindLayout, KindSgdisk:
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("gpt: %w", err)
		}
		defer f.Close()
		if kind == KindLayout {
			t, err = LoadLayout(f)
		} else {
			t, err = ReadSgdiskBackupSectors(f, sectorSize)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	default:
		if t, err = ReadFile(path, sectorSize); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// GuessSectorSize tells which logical sector size (512 or 4096) puts a GPT
// header signature at LBA 1 of path, or 0 when neither does. It helps to
// say "read it with 4096-byte sectors" when a 4Kn disk image is read as
// 512 (the usual mistake); devices report their own sector size.
func GuessSectorSize(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sig := make([]byte, len(Signature))
	for _, ss := range []int{512, 4096} {
		if n, _ := f.ReadAt(sig, int64(ss)); n == len(sig) && string(sig) == Signature {
			return ss
		}
	}
	return 0
}
