package qemutests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

// qemuProblem is why QEMU cannot run here ("" when it can); every test skips
// on it, loudly.
var qemuProblem string

// toolDir holds the host commands built once for all tests.
var toolDir string

func TestMain(m *testing.M) {
	if err := Runnable(); err != nil {
		qemuProblem = err.Error()
		fmt.Fprintf(os.Stderr, "\n!!! QEMU END-TO-END TESTS SKIPPED: QEMU cannot run here: %s\n!!! Install qemu-system-x86 (./build.sh deps) to run them.\n\n", qemuProblem)
	} else {
		fmt.Fprintf(os.Stderr, "qemu-tests: accel %s, up to %d VMs at once, timeouts x%.1f, logs in %s\n",
			Accel(), cap(vmSlots), Slowdown(), LogDir())
	}
	dir, err := os.MkdirTemp("", "qemu-tests-tools-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	toolDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needQEMU skips the test, loudly, when QEMU cannot run at all.
func needQEMU(t *testing.T) {
	t.Helper()
	if qemuProblem != "" {
		fmt.Fprintf(os.Stderr, "!!! SKIP %s: QEMU cannot run: %s\n", t.Name(), qemuProblem)
		t.Skipf("SKIPPING: QEMU cannot run here: %s", qemuProblem)
	}
}

var (
	snapOnce sync.Once
	snap     *Artifacts
	snapErr  error
)

// artifacts returns the out/ artifacts, failing (not skipping) when
// ./build.sh has not been run: CI always builds them first. All tests of
// a run boot one copy, taken at the first call.
func artifacts(t *testing.T) *Artifacts {
	t.Helper()
	needQEMU(t)
	snapOnce.Do(func() {
		a, err := FindArtifacts()
		if err != nil {
			snapErr = err
			return
		}
		snap, snapErr = a.Snapshot(toolDir)
	})
	if snapErr != nil {
		t.Fatal(snapErr)
	}
	return snap
}

var (
	toolsMu    sync.Mutex
	toolsBuilt = map[string]error{}
)

// tools builds the named commands (once per test binary) and skips the test
// naming the component when a command has not been written yet.
func tools(t *testing.T, names ...string) *Tools {
	t.Helper()
	toolsMu.Lock()
	defer toolsMu.Unlock()
	for _, n := range names {
		err, done := toolsBuilt[n]
		if !done {
			_, err = BuildTools(toolDir, n)
			toolsBuilt[n] = err
		}
		var mc *MissingComponent
		if errors.As(err, &mc) {
			missing(t, mc.Name, mc.Why)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return &Tools{Dir: toolDir}
}

// missing skips a scenario whose component has not landed, naming it.
func missing(t *testing.T, component, why string) {
	t.Helper()
	fmt.Fprintf(os.Stderr, "!!! SKIP %s: needs %s, which is missing: %s\n", t.Name(), component, why)
	t.Skipf("SKIPPING: needs %s, which is missing: %s", component, why)
}

var (
	esxibootOnce sync.Once
	esxibootPath string
	esxibootErr  error
)

// esxibootInitrd returns the rescue initramfs with the esxiboot test uinit
// laid over it, built once for all tests.
func esxibootInitrd(t *testing.T, a *Artifacts) string {
	t.Helper()
	esxibootOnce.Do(func() {
		esxibootPath = filepath.Join(toolDir, "esxiboot.initramfs")
		esxibootErr = EsxibootInitramfs(a.Initramfs, esxibootPath)
	})
	if esxibootErr != nil {
		t.Fatal(esxibootErr)
	}
	return esxibootPath
}

// boot starts vm (named after the test plus suffix) and stops it when the
// test ends.
func boot(t *testing.T, suffix string, vm VM) *Running {
	t.Helper()
	vm.Name = t.Name()
	if suffix != "" {
		vm.Name += "-" + suffix
	}
	r, err := Start(context.Background(), vm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	t.Logf("booting %s (console: %s)", vm.Name, r.LogPath())
	return r
}

// handsOff runs HandsOff for a test: the VM is stopped when the test
// ends, and a boot that did not end as wanted fails the test at once.
func handsOff(t *testing.T, vm VM, wantAfter *regexp.Regexp) (*Running, []string) {
	t.Helper()
	r, m, err := HandsOff(context.Background(), vm, wantAfter)
	if r != nil {
		t.Cleanup(r.Stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r, m
}

// quick is a short timeout for harness checks that need no rescue system.
var quick = 30 * time.Second

// missingRescue skips a hands-off scenario while the rescue init has not
// been written.
func missingRescue(t *testing.T) {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(root, "cmds", "rescue", "*.go")); len(m) == 0 {
		missing(t, "cmds/rescue", "the rescue init (hands-off rescue.action=...) has no code yet")
	}
}
