package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/keep"
	"golang.org/x/sys/unix"
)

// loadCred reads rescue.cred= once: an http(s) URL, a file of the running
// rescue system, or else that path on the rescue stick's FAT partition
// (mounted read-only for the read). Its values are registered as secrets:
// the console and the report never show them.
func (s *System) loadCred(ctx context.Context, c *cmdline.Config) error {
	if s.cred != nil || c.Cred == "" {
		return nil
	}
	var data []byte
	var err error
	switch {
	case cmdline.IsURL(c.Cred):
		data, err = s.fetchSmall(ctx, c.Cred)
	default:
		data, err = os.ReadFile(c.Cred)
		if errors.Is(err, fs.ErrNotExist) {
			data, err = readFromStick(c.Cred)
		}
	}
	if err != nil {
		return fmt.Errorf("rescue.cred=%s: %w", cmdline.RedactURL(c.Cred), err)
	}
	cr, err := cred.Parse(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("rescue.cred=%s: %w", cmdline.RedactURL(c.Cred), err)
	}
	s.cred = cr
	s.Con.Printf("credentials: %s from %s", cr, cmdline.RedactURL(c.Cred))
	return nil
}

// fetchSmall downloads at most 64 KiB.
func (s *System) fetchSmall(ctx context.Context, url string) ([]byte, error) {
	rc, err := openStream(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 64<<10))
}

// readFromStick reads path from the rescue stick's FAT partition.
func readFromStick(path string) ([]byte, error) {
	st, err := keep.New(keep.Options{})
	if err != nil {
		return nil, fmt.Errorf("not in the rescue system, and %w", err)
	}
	dir, err := os.MkdirTemp("", "rescue-stick-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	if err := unix.Mount(st.Device(), dir, "vfat", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return nil, fmt.Errorf("mounting the rescue stick %s read-only: %w", st.Device(), err)
	}
	defer unix.Unmount(dir, 0)
	data, err := os.ReadFile(filepath.Join(dir, filepath.Clean("/"+path)))
	if err != nil {
		return nil, fmt.Errorf("not in the rescue system, nor on the rescue stick %s: %w", st.Device(), err)
	}
	return data, nil
}
