package coldplug

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Index is the module index depmod(8) writes for one kernel: where each
// module's file is (modules.dep), what it depends on, which modules are
// built into the kernel (modules.builtin), soft dependencies
// (modules.softdep) and the aliases (modules.alias).
type Index struct {
	Dir      string              // /lib/modules/<release>
	Aliases  *Aliases            // modules.alias
	path     map[string]string   // module name -> file, relative to Dir
	deps     map[string][]string // module name -> dependency names, in modules.dep order
	builtin  map[string]bool
	softPre  map[string][]string // names or aliases to load before
	softPost map[string][]string // names or aliases to load after
}

// ModuleName normalises a module name or file name the way kmod does:
// directory and .ko[.xz|.zst|.gz] suffix dropped, '-' replaced by '_'.
func ModuleName(s string) string {
	s = filepath.Base(s)
	if i := strings.Index(s, ".ko"); i >= 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "-", "_")
}

// LoadIndex reads the index files in dir. modules.dep and modules.alias
// are required; modules.builtin and modules.softdep are optional.
func LoadIndex(dir string) (*Index, error) {
	ix := &Index{Dir: dir, path: map[string]string{}, deps: map[string][]string{},
		builtin: map[string]bool{}, softPre: map[string][]string{}, softPost: map[string][]string{}}
	err := eachLine(filepath.Join(dir, "modules.dep"), true, func(line string) error {
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("want \"FILE: DEPS\", got %q", line)
		}
		name := ModuleName(file)
		ix.path[name] = strings.TrimSpace(file)
		for _, d := range strings.Fields(rest) {
			ix.deps[name] = append(ix.deps[name], ModuleName(d))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := eachLine(filepath.Join(dir, "modules.builtin"), false, func(line string) error {
		ix.builtin[ModuleName(line)] = true
		return nil
	}); err != nil {
		return nil, err
	}
	if err := eachLine(filepath.Join(dir, "modules.softdep"), false, func(line string) error {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "softdep" {
			return nil // tolerate what kmod tolerates
		}
		mod := ModuleName(f[1])
		var into *map[string][]string
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				into = &ix.softPre
			case "post:":
				into = &ix.softPost
			default:
				if into != nil {
					(*into)[mod] = append((*into)[mod], w)
				}
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	a, err := LoadAliases(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return nil, err
	}
	ix.Aliases = a
	return ix, nil
}

func eachLine(path string, required bool, fn func(string) error) error {
	f, err := os.Open(path)
	if err != nil {
		if !required && os.IsNotExist(err) {
			return nil
		}
		return err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	for s.Scan() {
		n++
		t := strings.TrimSpace(s.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if err := fn(t); err != nil {
			return fmt.Errorf("%s line %d: %w", path, n, err)
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// Builtin reports whether the module is built into the kernel.
func (ix *Index) Builtin(name string) bool { return ix.builtin[ModuleName(name)] }

// Has reports whether the module exists as a loadable file.
func (ix *Index) Has(name string) bool { _, ok := ix.path[ModuleName(name)]; return ok }

// Path returns the module's file, absolute.
func (ix *Index) Path(name string) string {
	p, ok := ix.path[ModuleName(name)]
	if !ok {
		return ""
	}
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(ix.Dir, p)
}

// Resolve turns a module name or an alias into module names, like
// `modprobe -R`: a known module (loadable or builtin) is itself, anything
// else is looked up in modules.alias.
func (ix *Index) Resolve(nameOrAlias string) []string {
	n := ModuleName(nameOrAlias)
	if !strings.ContainsAny(nameOrAlias, ":*?[") && (ix.path[n] != "" || ix.builtin[n]) {
		return []string{n}
	}
	return ix.Aliases.Lookup(nameOrAlias)
}

// Plan returns the modules to load, in order, so that name works:
// soft "pre" dependencies with their own dependencies, then hard
// dependencies (modules.dep), the module itself, then soft "post"
// dependencies. Builtin modules are left out. An unknown module is an
// error; a soft dependency that cannot be resolved is skipped (kmod does
// the same).
func (ix *Index) Plan(name string) ([]string, error) {
	n := ModuleName(name)
	if ix.builtin[n] {
		return nil, nil
	}
	if _, ok := ix.path[n]; !ok {
		return nil, fmt.Errorf("module %s is not in %s/modules.dep", name, ix.Dir)
	}
	var out []string
	done := map[string]bool{}
	var visit func(m string, soft bool, stack []string) error
	visit = func(m string, soft bool, stack []string) error {
		if done[m] || ix.builtin[m] {
			return nil
		}
		for _, s := range stack {
			if s == m {
				return fmt.Errorf("circular dependency: %s -> %s", strings.Join(stack, " -> "), m)
			}
		}
		if _, ok := ix.path[m]; !ok {
			if soft {
				return nil
			}
			return fmt.Errorf("module %s (needed by %s) is not in modules.dep", m, strings.Join(stack, " -> "))
		}
		stack = append(stack, m)
		for _, s := range ix.softPre[m] {
			for _, r := range ix.Resolve(s) {
				if err := visit(r, true, stack); err != nil {
					return err
				}
			}
		}
		for _, d := range ix.deps[m] {
			if err := visit(d, soft, stack); err != nil {
				return err
			}
		}
		if !done[m] {
			done[m] = true
			out = append(out, m)
		}
		for _, s := range ix.softPost[m] {
			for _, r := range ix.Resolve(s) {
				if err := visit(r, true, stack); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := visit(n, false, nil); err != nil {
		return nil, err
	}
	return out, nil
}
