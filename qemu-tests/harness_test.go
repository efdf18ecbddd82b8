package qemutests

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/esxi/stubkernel"
)

// TestHarness checks the harness itself on the stand-in ESXi kernel, which
// QEMU can boot directly (multiboot): the console reaches Expect and the
// log, the kernel command line gets through, a VM that powers off ends
// Wait, and a marker that never comes fails with the console's tail.
func TestHarness(t *testing.T) {
	needQEMU(t)
	t.Parallel()
	kernel := filepath.Join(t.TempDir(), "b.b00")
	if err := os.WriteFile(kernel, stubkernel.Kernel(), 0o644); err != nil {
		t.Fatal(err)
	}
	const uuid = "00112233445566778899aabbccddeeff"

	t.Run("marker", func(t *testing.T) {
		t.Parallel()
		r := boot(t, "", VM{Kernel: kernel, Cmdline: "bootUUID=" + uuid, Timeout: Scaled(quick)})
		m, err := r.Expect(regexp.MustCompile(regexp.QuoteMeta(stubkernel.Marker)+`(\S+)`), 0)
		if err != nil {
			t.Fatal(err)
		}
		if m[1] != uuid {
			t.Errorf("stub kernel printed bank %q, want %q from the command line", m[1], uuid)
		}
		if err := r.Wait(Scaled(10 * time.Second)); err != nil {
			t.Errorf("the stub kernel powers off, so QEMU should exit: %v", err)
		}
		log, err := os.ReadFile(r.LogPath())
		if err != nil || !strings.Contains(string(log), stubkernel.Marker+uuid) {
			t.Errorf("serial log %s lacks the marker (err %v)", r.LogPath(), err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		r := boot(t, "", VM{Kernel: kernel, Cmdline: "bootUUID=" + uuid, Timeout: Scaled(quick)})
		// The console must have said something before the short wait
		// begins (under load QEMU may take longer than 3 s to print
		// the stub's line); the tail of the failed wait must show it.
		if _, err := r.Expect(regexp.MustCompile(regexp.QuoteMeta(stubkernel.Marker)), 0); err != nil {
			t.Fatalf("the stub kernel printed no marker: %v", err)
		}
		_, err := r.Expect(regexp.MustCompile(`never printed`), 3*time.Second)
		var ee *ExpectError
		if !errors.As(err, &ee) {
			t.Fatalf("Expect for a missing marker returned %v, want an *ExpectError", err)
		}
		// The stub powers off quickly, so either reason is right; both must
		// show what the console said.
		if !strings.Contains(ee.Tail, stubkernel.Marker) {
			t.Errorf("failure message lacks the console tail:\n%v", err)
		}
	})

	t.Run("failmarker", func(t *testing.T) {
		t.Parallel()
		r := boot(t, "", VM{Kernel: kernel, Cmdline: "bootUUID=" + uuid, Timeout: Scaled(quick)})
		_, err := r.Expect(regexp.MustCompile(`never printed`), 0, regexp.MustCompile(`ESXI-STUB`))
		if err == nil || !strings.Contains(err.Error(), `saw "`) || !strings.Contains(err.Error(), "ESXI-STUB") {
			t.Errorf("a failure marker should end Expect at once, got %v", err)
		}
	})
}
