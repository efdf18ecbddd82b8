package coldplug

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// KernelLoader loads modules into the running kernel: each module's plan
// (Index.Plan) in order, skipping builtins and modules already loaded
// (/proc/modules), with finit_module(2) for plain .ko files and
// init_module(2) on the decompressed bytes for .ko.xz, .ko.zst and .ko.gz.
// EEXIST (loaded meanwhile) is success.
type KernelLoader struct {
	Index *Index
	// Params returns the parameters for a module (module.param=value on
	// the kernel command line); nil means none.
	Params func(module string) string
	// DryRun, when set, receives each module file instead of loading it.
	DryRun func(path string)
	loaded map[string]bool
}

// NewKernelLoader returns a loader for ix that knows the modules already
// in the kernel (read from procModules, normally /proc/modules; "" for
// none).
func NewKernelLoader(ix *Index, procModules string) (*KernelLoader, error) {
	k := &KernelLoader{Index: ix, loaded: map[string]bool{}}
	if procModules == "" {
		return k, nil
	}
	f, err := os.Open(procModules)
	if err != nil {
		return nil, fmt.Errorf("reading loaded modules: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) > 0 {
			k.loaded[ModuleName(f[0])] = true
		}
	}
	return k, s.Err()
}

// Load loads the module and everything its plan needs.
func (k *KernelLoader) Load(module string) error {
	plan, err := k.Index.Plan(module)
	if err != nil {
		return err
	}
	for _, m := range plan {
		if k.loaded[m] {
			continue
		}
		p := k.Index.Path(m)
		if k.DryRun != nil {
			k.DryRun(p)
			k.loaded[m] = true
			continue
		}
		params := ""
		if k.Params != nil {
			params = k.Params(m)
		}
		if err := LoadFile(p, params); err != nil {
			if m == ModuleName(module) {
				return err
			}
			return fmt.Errorf("dependency %s: %w", m, err)
		}
		k.loaded[m] = true
	}
	return nil
}

// LoadFile loads one module file into the kernel.
func LoadFile(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader
	switch {
	case strings.HasSuffix(path, ".ko"):
		err := unix.FinitModule(int(f.Fd()), params, 0)
		if err == nil || errors.Is(err, unix.EEXIST) {
			return nil
		}
		if !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("finit_module %s: %w", path, err)
		}
		r = f
	case strings.HasSuffix(path, ".ko.xz"):
		if r, err = xz.NewReader(f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	case strings.HasSuffix(path, ".ko.zst"):
		d, err := zstd.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		defer d.Close()
		r = d
	case strings.HasSuffix(path, ".ko.gz"):
		if r, err = gzip.NewReader(f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	default:
		return fmt.Errorf("%s: not a kernel module file (.ko, .ko.xz, .ko.zst, .ko.gz)", path)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return fmt.Errorf("decompressing %s: %w", path, err)
	}
	if err := unix.InitModule(buf.Bytes(), params); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("init_module %s: %w", path, err)
	}
	return nil
}
