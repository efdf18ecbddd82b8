package qemutests

import (
	"context"
	"regexp"
	"testing"
	"time"
)

// consoleStep is one exchange with the menu on the serial console: wait
// for a line matching want, then type keys.
type consoleStep struct {
	want string
	keys string
}

// driveConsole boots the rescue system with no rescue.action (the menu),
// plays steps over the serial port and waits for QEMU to exit (the last
// step powers off).
func driveConsole(t *testing.T, name string, extra []string, steps []consoleStep) {
	t.Helper()
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()
	b, before := brokenIncident(t, tl)
	r, err := Start(context.Background(), VM{
		Name:     name,
		Kernel:   a.Kernel,
		Initrd:   a.Initramfs,
		Cmdline:  KernelCmdline(extra...),
		Disks:    []Disk{{Path: b.Damaged}},
		Timeout:  Scaled(3 * time.Minute),
		Keyboard: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	for i, s := range steps {
		timeout := Scaled(20 * time.Second)
		if i == 0 {
			timeout = Scaled(90 * time.Second) // the boot
		}
		if _, err := r.Expect(regexp.MustCompile(s.want), timeout, MarkFailed); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
		time.Sleep(300 * time.Millisecond) // the rest of the frame
		if err := r.Type(s.keys); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Wait(Scaled(30 * time.Second)); err != nil {
		t.Fatalf("power off: %v", err)
	}
	checkFixed(t, b, before)
}

// TestConsoleMenu: the menu on a serial console (VT100-style, keys
// typed on the serial port): the incident's disk is reported out of
// place, a wrong device name is refused, the typed one is fixed, and
// Power off ends the run; the host then checks the table byte for byte,
// with sgdisk and the partitions' data.
func TestConsoleMenu(t *testing.T) {
	driveConsole(t, t.Name(), nil, []consoleStep{
		{`entries 5,6,7,8 out of place`, "1"},
		{`\[f\] Fix it now: the same as gptfix -esxi -yes /dev/vda`, "f"},
		{`type the device name \(/dev/vda\)`, "/dev/vdb\r"},
		{`You typed "/dev/vdb", not /dev/vda: nothing written`, "/dev/vda\r"},
		{`written and verified`, "\r"},
		{`\[p\] Power off`, "p"},
		{`Power off now\?`, "y"},
	})
}

// TestConsolePlainMenu: the same on a TERM=dumb console, through the
// numbered plain-text menu (lines typed in the tty's cooked mode).
func TestConsolePlainMenu(t *testing.T) {
	driveConsole(t, t.Name(), []string{"TERM=dumb"}, []consoleStep{
		{`Type the number or letter shown in \[ \] and Enter`, "1\n"},
		{`f = Fix, 0 = back`, "f\n"},
		{`Type the text and Enter`, "/dev/vda\n"},
		{`Enter = back to home`, "\n"},
		{`Type the number or letter shown`, "p\n"},
		{`y = yes, n = no`, "y\n"},
	})
}
