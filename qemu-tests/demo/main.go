// Command demo tells the incident's story on a terminal, for real: it builds
// an ESXi 5.0 boot disk and the copy Windows made of it on a bigger disk,
// shows what gptdiff and u-root's ESXi loader (esxiboot) make of the copy,
// boots the rescue system in QEMU to fix it with no one at the console, and
// shows gptdiff and esxiboot again.
//
// Run it from the repository after ./build.sh (./build.sh demo does both):
//
//	go run ./qemu-tests/demo
//
// It takes a few minutes without KVM. Serial logs of the three boots are
// kept under out/qemu-tests/demo-*.log. Exit status 0 when the story ends
// well, 1 when a check failed, 2 on trouble.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	qt "github.com/esxi-rescue/rescue/qemu-tests"
)

var (
	keep    = flag.Bool("keep", false, "keep the disk images (their directory is printed)")
	verbose = flag.Bool("v", false, "show the whole serial console of every boot")
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `usage: go run ./qemu-tests/demo [-keep] [-v]

Reproduces the incident (an ESXi 5.0 disk whose GPT entry array Windows
compacted while raw-copying it onto a bigger disk) and fixes it with the
rescue system booted hands-off in QEMU, showing gptdiff and u-root's
esxiboot before and after. Needs the artifacts of ./build.sh in out/ and
qemu-system-x86_64; uses KVM when it can (QEMU_TESTS_ACCEL=tcg forces TCG).

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(); err != nil {
		var f failure
		if errors.As(err, &f) {
			fmt.Fprintf(os.Stderr, "\ndemo: FAILED: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "\ndemo: %v\n", err)
		os.Exit(2)
	}
}

// failure is a check that did not come out as the story says.
type failure struct{ error }

// tty says whether stdout is a terminal (colours then).
var tty = func() bool {
	st, err := os.Stdout.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}()

func title(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	if tty {
		fmt.Printf("\n\033[1;36m== %s\033[0m\n", s)
	} else {
		fmt.Printf("\n== %s\n", s)
	}
}

func say(format string, a ...any) { fmt.Printf(format+"\n", a...) }

func good(format string, a ...any) {
	if tty {
		fmt.Printf("\033[1;32m✔ "+format+"\033[0m\n", a...)
	} else {
		fmt.Printf("OK: "+format+"\n", a...)
	}
}

func bad(format string, a ...any) {
	if tty {
		fmt.Printf("\033[1;31m✘ "+format+"\033[0m\n", a...)
	} else {
		fmt.Printf("PROBLEM: "+format+"\n", a...)
	}
}

// indent prints command output indented, as a quotation.
func indent(out string) {
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Println("    " + l)
	}
}

// rescueLog matches the rescue system's time-stamped log lines.
var rescueLog = regexp.MustCompile(`^\[\d\d:\d\d:\d\d \+ *[0-9.]+s\] `)

// consoleLine shows the interesting lines of a VM's serial console live:
// the rescue system's log (not its JSON report) and what esxiboot and the
// stand-in ESXi kernel say.
func consoleLine(l string) {
	if *verbose {
		fmt.Println("    | " + l)
		return
	}
	if rescueLog.MatchString(l) {
		if !strings.Contains(l, "] report:") {
			fmt.Println("    | " + l)
		}
		return
	}
	for _, k := range []string{"ESXIBOOT-TEST: running", "Loaded image", "Name:", "Cmdline:", "failed to load", "ESXI-STUB", "GPTFIX"} {
		if strings.Contains(l, k) {
			fmt.Println("    | " + strings.TrimSpace(l))
			return
		}
	}
}

func run() error {
	start := time.Now()
	if err := qt.Runnable(); err != nil {
		return err
	}
	a, err := qt.FindArtifacts()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "esxi-rescue-demo-")
	if err != nil {
		return err
	}
	if *keep {
		say("disk images in %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	if a, err = a.Snapshot(work); err != nil {
		return err
	}
	tools, err := qt.BuildTools(work, "esximg", "gptdiff")
	if err != nil {
		return err
	}
	accel := qt.Accel()
	say("QEMU with %s%s; serial logs in %s", accel, map[bool]string{true: " (no KVM: each boot takes a while)"}[accel == "tcg"], qt.LogDir())

	title("1. The incident, reproduced")
	say("An ESXi 5.0 boot disk (6 GiB, datastore included) is copied raw onto a")
	say("bigger 8 GiB disk, and the partition table is rewritten the way Windows")
	say("did it: the same partitions, every checksum valid, but the empty entry 4")
	say("closed up, so entries 5,6,7,8 moved up one slot.")
	b, err := qt.MakeBroken(tools, work, qt.BrokenOptions{Version: "5.0", Size: "6G", DamageSize: "8G", Mode: "windows"})
	if err != nil {
		return err
	}
	say("\n$ sgdisk -v broken.img    # what an ordinary partition tool says")
	sg, _ := exec.Command("sgdisk", "-v", b.Damaged).CombinedOutput()
	indent(verdictLines(string(sg)))
	say("(every checksum is valid and no partition overlaps: to sgdisk the table is fine)")

	title("2. gptdiff: original vs. the copy")
	say("$ gptdiff original.img broken.img")
	out, err := tools.Run("gptdiff", b.Original, b.Damaged)
	indent(trimErr(out))
	if code := exitCode(err); code != 1 {
		return failure{fmt.Errorf("gptdiff exited %d on the broken disk, want 1 (different)", code)}
	}
	good("gptdiff sees what sgdisk does not: exit status 1, the array was compacted")

	title("3. Booting the copy with u-root's ESXi loader (esxiboot, dry run)")
	say("esxiboot, like VMware's own loader, looks for the boot banks at partitions 5 and 6.")
	initrd := filepath.Join(work, "esxiboot.initramfs")
	if err := qt.EsxibootInitramfs(a.Initramfs, initrd); err != nil {
		return err
	}
	ctx := context.Background()
	res, r, err := qt.RunEsxiboot(ctx, a, initrd, qt.Disk{Path: b.Damaged}, true, "demo-1-esxiboot-before", consoleLine)
	stop(r)
	if err != nil {
		return err
	}
	msg, err := qt.BeforeFix(b, res)
	if err != nil {
		return failure{err}
	}
	good("%s", msg)
	say("  (on the real server, ESXi came up broken: no hostd, no datastore)")

	title("4. The fix: the rescue system, hands-off")
	cmdline := "rescue.action=fix rescue.ref=esxi rescue.target=auto rescue.done=poweroff"
	say("kernel command line: %s", cmdline)
	say("(no reference image needed: it recognises the ESXi layout; no one at the console)")
	t0 := time.Now()
	r, _, err = qt.HandsOff(ctx, qt.VM{
		Name:    "demo-2-fix",
		Kernel:  a.Kernel,
		Initrd:  a.Initramfs,
		Cmdline: qt.KernelCmdline(strings.Fields(cmdline)...),
		Disks:   []qt.Disk{{Path: b.Damaged}},
		OnLine:  consoleLine,
	}, nil)
	stop(r)
	if err != nil {
		return failure{err}
	}
	good("the rescue system said DONE and powered off after %s", time.Since(t0).Round(time.Second))

	title("5. Checking from the host")
	if err := qt.CheckFixedGPT(b.Damaged, 512, b.OrigGPT.Primary); err != nil {
		bad("%v", err)
		return failure{err}
	}
	good("both entry arrays are byte-identical to the original; backup GPT at the new last sector")
	if err := qt.SgdiskVerify(b.Damaged); err != nil {
		return failure{err}
	}
	good("sgdisk -v: no problems found")
	say("\n$ gptdiff original.img fixed.img")
	out, err = tools.Run("gptdiff", b.Original, b.Damaged)
	indent(verdict(trimErr(out)))
	if code := exitCode(err); code != 0 {
		return failure{fmt.Errorf("gptdiff exited %d after the fix, want 0 (same)", code)}
	}
	good("gptdiff: same layout as the original (exit 0)")

	title("6. Booting ESXi again with esxiboot (for real, with kexec)")
	res, r, err = qt.RunEsxiboot(ctx, a, initrd, qt.Disk{Path: b.Damaged}, false, "demo-3-esxiboot-after", consoleLine)
	stop(r)
	if err != nil {
		return failure{err}
	}
	if res.Booted != b.RightBank {
		return failure{fmt.Errorf("the stand-in ESXi kernel was booted from bank %s, want %s%s", res.Booted, b.RightBank, qt.Diagnose(res.Lines))}
	}
	good("ESXi's kernel (our stand-in) booted from the primary boot bank %s", res.Booted)

	title("The end")
	say("Fixed with no one at the console, proved byte for byte, in %s.", time.Since(start).Round(time.Second))
	say("Serial consoles of the three boots: %s/demo-*.log", qt.LogDir())
	return nil
}

func stop(r *qt.Running) {
	if r != nil {
		r.Stop()
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// trimErr strips what Tools.Run appends to its error text (the output is
// printed separately).
func trimErr(out string) string { return strings.TrimRight(out, "\n") }

// verdictLines keeps sgdisk -v's verdict ("No problems found..." or the
// problems), dropping its cautions about alignment.
func verdictLines(s string) string {
	var keep []string
	on := false
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(l, "No problems") || strings.HasPrefix(l, "Problem") || strings.HasPrefix(l, "Identified") {
			on = true
		}
		if on {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return strings.TrimSpace(s)
	}
	return strings.Join(keep, "\n")
}

// verdict keeps the table and the verdict of gptdiff's output, dropping the
// header-difference notes that are expected after a restore.
func verdict(out string) string {
	if i := strings.Index(out, "\nHeader differences"); i >= 0 {
		return out[:i]
	}
	return out
}
