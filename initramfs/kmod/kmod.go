// Package kmod selects kernel modules from an unpacked Linux kernel package:
// it reads modules.dep, modules.softdep and modules.builtin as written by
// depmod(8), resolves the closure of a list of module names, and reads the
// firmware a module asks for from its .modinfo ELF section.
package kmod

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Name returns the canonical module name of a module path or name:
// the base name without .ko and compression suffix, with '-' turned into '_'
// (the kernel treats both the same).
func Name(p string) string {
	b := path.Base(p)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// Index is what depmod knows about one kernel's modules.
type Index struct {
	// Path maps a module name to its path relative to lib/modules/<kver>.
	Path map[string]string
	// Deps maps a module name to the names of the modules it needs (modules.dep).
	Deps map[string][]string
	// Soft maps a module name to its soft "pre:" and "post:" dependencies (modules.softdep).
	Soft map[string][]string
	// Builtin holds the names of modules built into the kernel (modules.builtin).
	Builtin map[string]bool
}

// ParseDep reads a modules.dep file ("path: dep-path dep-path ...") into idx.
func (idx *Index) ParseDep(r io.Reader) error {
	if idx.Path == nil {
		idx.Path = map[string]string{}
	}
	if idx.Deps == nil {
		idx.Deps = map[string][]string{}
	}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return fmt.Errorf("modules.dep line %d: no \"module:\" prefix: %q", n, line)
		}
		name := Name(mod)
		idx.Path[name] = strings.TrimSpace(mod)
		var names []string
		for _, d := range strings.Fields(deps) {
			names = append(names, Name(d))
		}
		idx.Deps[name] = names
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("reading modules.dep: %w", err)
	}
	return nil
}

// ParseSoftdep reads a modules.softdep file ("softdep mod pre: a b post: c").
func (idx *Index) ParseSoftdep(r io.Reader) error {
	if idx.Soft == nil {
		idx.Soft = map[string][]string{}
	}
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 2 || f[0] != "softdep" {
			continue
		}
		name := Name(f[1])
		for _, w := range f[2:] {
			if w == "pre:" || w == "post:" {
				continue
			}
			idx.Soft[name] = append(idx.Soft[name], Name(w))
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("reading modules.softdep: %w", err)
	}
	return nil
}

// ParseBuiltin reads a modules.builtin file (one kernel/... path per line).
func (idx *Index) ParseBuiltin(r io.Reader) error {
	if idx.Builtin == nil {
		idx.Builtin = map[string]bool{}
	}
	s := bufio.NewScanner(r)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" {
			idx.Builtin[Name(line)] = true
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("reading modules.builtin: %w", err)
	}
	return nil
}

// Load reads modules.dep, modules.builtin and (when present) modules.softdep
// from dir, a lib/modules/<kver> directory on which depmod has been run.
func Load(dir string) (*Index, error) {
	idx := &Index{}
	for _, f := range []struct {
		name     string
		parse    func(io.Reader) error
		optional bool
	}{
		{"modules.dep", idx.ParseDep, false},
		{"modules.builtin", idx.ParseBuiltin, false},
		{"modules.softdep", idx.ParseSoftdep, true},
	} {
		fh, err := os.Open(path.Join(dir, f.name))
		if err != nil {
			if f.optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("loading module index: %w", err)
		}
		err = f.parse(fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path.Join(dir, f.name), err)
		}
	}
	return idx, nil
}

// Selection is the result of Resolve.
type Selection struct {
	// Modules are the names of the loadable modules to bundle, sorted.
	Modules []string
	// Builtin are requested names that are built into the kernel, sorted.
	Builtin []string
}

// Resolve returns the requested modules together with everything they
// depend on (hard and soft dependencies). A requested name that is neither
// a module nor built in is an error; a soft dependency that does not exist
// is ignored, as modprobe does.
func (idx *Index) Resolve(names []string) (*Selection, error) {
	sel := &Selection{}
	seen := map[string]bool{}
	var missing []string
	var visit func(name string, soft bool)
	visit = func(name string, soft bool) {
		if seen[name] {
			return
		}
		seen[name] = true
		if _, ok := idx.Path[name]; !ok {
			if idx.Builtin[name] {
				if !soft {
					sel.Builtin = append(sel.Builtin, name)
				}
			} else if !soft {
				missing = append(missing, name)
			}
			return
		}
		sel.Modules = append(sel.Modules, name)
		for _, d := range idx.Deps[name] {
			visit(d, false)
		}
		for _, d := range idx.Soft[name] {
			visit(d, true)
		}
	}
	for _, n := range names {
		visit(Name(n), false)
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("unknown kernel modules (neither in modules.dep nor modules.builtin): %s", strings.Join(missing, ", "))
	}
	sort.Strings(sel.Modules)
	sort.Strings(sel.Builtin)
	return sel, nil
}

// ModInfo returns the key=value pairs of a module's .modinfo section
// (license, alias, firmware, depends, ...). Compressed modules are not
// supported: Debian ships them uncompressed (CONFIG_MODULE_COMPRESS_NONE).
func ModInfo(file string) (map[string][]string, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", file, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", file)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: reading .modinfo: %w", file, err)
	}
	info := map[string][]string{}
	for _, kv := range strings.Split(string(data), "\x00") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		info[k] = append(info[k], v)
	}
	return info, nil
}
