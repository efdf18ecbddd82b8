package qemutests

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

// CompressZstd writes src zstd-compressed to dst, the way an administrator
// would store a disk image, and returns the SHA-256 of the uncompressed
// bytes (what rescue.sha256= takes).
func CompressZstd(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	defer out.Close()
	enc, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(enc, h), in); err != nil {
		enc.Close()
		return "", fmt.Errorf("compress %s: %w", src, err)
	}
	if err := enc.Close(); err != nil {
		return "", fmt.Errorf("compress %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// BlankDisk creates an empty sparse disk image of size bytes.
func BlankDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
