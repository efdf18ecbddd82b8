package imaging

import (
	"errors"
	"io"
)

// gptSignature starts a GPT header.
const gptSignature = "EFI PART"

// What imaging needs from package gpt, behind variables while that package
// is being written; gptops_gpt.go wires them to it.
var (
	// gptParsePrimary parses the primary GPT at the start of an image
	// stream and returns its last used LBA.
	gptParsePrimary = func(head []byte, sectorSize int) (uint64, error) {
		return 0, errors.New("GPT parsing is not available in this build")
	}
	// gptDescribe describes the GPT on a disk ("" when none is found).
	gptDescribe = func(r io.ReaderAt, size int64, sectorSize int) string { return "" }
	// gptLayout reads a disk's GPT and returns a writer of its layout
	// file (nil when the disk has no GPT) and its last used LBA.
	gptLayout = func(r io.ReaderAt, size int64, sectorSize int) (func(io.Writer) error, uint64) { return nil, 0 }
	// fixupGPT repairs the GPT of the restored target at path (relocating a
	// backup stranded by a size change, keeping every slot byte-identical).
	// It returns a description and whether anything was written.
	fixupGPT = func(path string, sectorSize int, undoPath string) (string, bool, error) {
		return "", false, errors.New("the GPT fix-up is not available in this build")
	}
)
