package gpt_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestOpenDeviceExclusive: a writable open holds the disk (flock on
// files and devices, O_EXCL on devices) until it is closed; a second
// writable open fails with ErrBusy, read-only opens still work.
func TestOpenDeviceExclusive(t *testing.T) {
	dir := t.TempDir()
	img := gpttest.Sparse(t, dir, "d.img", 64<<20)
	targets := map[string]string{"file": img}
	if os.Geteuid() == 0 {
		if dev, why := gpttest.AttachLoop(t, img); dev != "" {
			targets["device"] = dev
		} else {
			t.Log(why)
		}
	}
	for name, path := range targets {
		t.Run(name, func(t *testing.T) {
			first, err := gpt.OpenDevice(path, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			_, err = gpt.OpenDevice(path, 0, true)
			if !errors.Is(err, gpt.ErrBusy) || !strings.Contains(err.Error(), "another program has the disk open") {
				t.Errorf("second writable open: %v, want ErrBusy", err)
			}
			ro, err := gpt.OpenDevice(path, 0, false)
			if err != nil {
				t.Errorf("read-only open while held: %v", err)
			} else {
				ro.Close()
			}
			// flock alone (what sfdisk --lock and systemd-udevd use).
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
				t.Error("flock(LOCK_EX) succeeded while OpenDevice holds the disk")
			}
			f.Close()
			first.Close()
			again, err := gpt.OpenDevice(path, 0, true)
			if err != nil {
				t.Fatalf("writable open after the holder closed: %v", err)
			}
			again.Close()
		})
	}
}

// TestOpenDeviceRefuses: a FIFO is refused at once (open(2) would block
// without a writer), and so is a read-only loop device for writing
// (BLKROGET), with ErrReadOnly.
func TestOpenDeviceRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, writable := range []bool{false, true} {
		done := make(chan error, 1)
		go func() {
			d, err := gpt.OpenDevice(fifo, 0, writable)
			if d != nil {
				d.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "FIFO") {
				t.Errorf("OpenDevice(FIFO, writable=%v): %v, want a refusal naming the FIFO", writable, err)
			}
		case <-time.After(10 * time.Second):
			// Unblock the open so the test can end.
			if w, err := os.OpenFile(fifo, os.O_RDWR, 0); err == nil {
				defer w.Close()
			}
			t.Errorf("OpenDevice(FIFO, writable=%v) blocks in open(2)", writable)
			<-done
		}
	}
	img := gpttest.Sparse(t, dir, "d.img", 64<<20)
	if dev := loopDevice(t, img, 512); dev != "" { // attached with -r
		_, err := gpt.OpenDevice(dev, 0, true)
		if !errors.Is(err, gpt.ErrReadOnly) || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("writable open of a read-only loop device: %v, want ErrReadOnly", err)
		}
	}
}
