package qemutests

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// modulePath identifies the repository's go.mod.
const modulePath = "github.com/esxi-rescue/rescue"

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot returns the repository's top directory: the nearest parent of the
// working directory whose go.mod declares our module.
func RepoRoot() (string, error) {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && bytes.Contains(b, []byte("module "+modulePath+"\n")) {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("qemu-tests: not inside the " + modulePath + " repository")
				return
			}
			dir = parent
		}
	})
	return rootDir, rootErr
}

// OutDir is where ./build.sh puts the artifacts (QEMU_TESTS_OUT overrides).
func OutDir() string {
	if d := os.Getenv("QEMU_TESTS_OUT"); d != "" {
		return d
	}
	root, err := RepoRoot()
	if err != nil {
		return "out"
	}
	return filepath.Join(root, "out")
}

// LogDir is where the serial logs of every boot are kept.
func LogDir() string { return filepath.Join(OutDir(), "qemu-tests") }

// Artifacts are the files ./build.sh produces that the tests boot.
type Artifacts struct {
	Kernel    string // out/rescue.vmlinuz
	Initramfs string // out/rescue.initramfs
	USB       string // out/rescue-usb.img
	PXEDir    string // out/pxe
}

// FindArtifacts returns the paths of the artifacts, failing with "run
// ./build.sh first" when the kernel or initramfs is missing. USB and PXEDir
// are checked by the scenarios that need them (UsbImage, PXE).
func FindArtifacts() (*Artifacts, error) {
	out := OutDir()
	a := &Artifacts{
		Kernel:    filepath.Join(out, "rescue.vmlinuz"),
		Initramfs: filepath.Join(out, "rescue.initramfs"),
		USB:       filepath.Join(out, "rescue-usb.img"),
		PXEDir:    filepath.Join(out, "pxe"),
	}
	var missing []string
	for _, p := range []string{a.Kernel, a.Initramfs} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s: run ./build.sh first", strings.Join(missing, ", "))
	}
	return a, nil
}

// Snapshot copies the artifacts into dir and returns the copies, so that a
// run boots one consistent set even if ./build.sh rewrites out/ meanwhile
// (QEMU reads -kernel and -initrd at every boot). Missing optional
// artifacts (USB image, PXE tree) stay missing.
func (a *Artifacts) Snapshot(dir string) (*Artifacts, error) {
	s := &Artifacts{
		Kernel:    filepath.Join(dir, "rescue.vmlinuz"),
		Initramfs: filepath.Join(dir, "rescue.initramfs"),
		USB:       filepath.Join(dir, "rescue-usb.img"),
		PXEDir:    filepath.Join(dir, "pxe"),
	}
	for _, c := range [][2]string{{a.Kernel, s.Kernel}, {a.Initramfs, s.Initramfs}, {a.USB, s.USB}, {a.PXEDir, s.PXEDir}} {
		if _, err := os.Stat(c[0]); err != nil {
			continue
		}
		if out, err := exec.Command("cp", "-a", "--sparse=always", c[0], c[1]).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("snapshot of %s: %v: %s", c[0], err, out)
		}
	}
	return s, nil
}

// Tools are our own commands, built once for the host from this checkout.
type Tools struct {
	Dir string
}

// Path returns the built command name (e.g. "esximg").
func (t *Tools) Path(name string) string { return filepath.Join(t.Dir, name) }

// Run runs a built command and returns its combined output; the exit code
// is in the error (an *exec.ExitError) when it is not 0.
func (t *Tools) Run(name string, args ...string) (string, error) {
	cmd := exec.Command(t.Path(name), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MissingComponent says a command has not been written yet: the scenario
// that needs it skips, naming it.
type MissingComponent struct{ Name, Why string }

func (m *MissingComponent) Error() string {
	return fmt.Sprintf("component %s is missing: %s", m.Name, m.Why)
}

// BuildTools builds the named commands (./cmds/NAME) into dir with the Go
// toolchain. A command whose directory holds no Go code yet is reported as
// a *MissingComponent; a command that does not compile is an error.
func BuildTools(dir string, names ...string) (*Tools, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		src := filepath.Join(root, "cmds", n)
		if m, _ := filepath.Glob(filepath.Join(src, "*.go")); len(m) == 0 {
			return nil, &MissingComponent{Name: "cmds/" + n, Why: "no Go files in " + src}
		}
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./cmds/"+n)
	}
	cmd := exec.Command(goBinary(), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", strings.Join(names, " "), err, out)
	}
	return &Tools{Dir: dir}, nil
}

func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}
