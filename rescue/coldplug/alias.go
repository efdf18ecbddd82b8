// Package coldplug loads the kernel modules the machine's hardware needs,
// the way udev's coldplug does on a full system: it reads every device's
// modalias in sysfs, matches it against modules.alias of the
// running kernel, and loads the matching modules with their dependencies
// (modules.dep), repeating while new devices appear (a loaded bus driver
// such as virtio_pci or a SCSI HBA brings up child devices that need
// further drivers).
package coldplug

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Alias is one "alias <pattern> <module>" line of modules.alias.
type Alias struct {
	Pattern string // fnmatch(3) glob over a modalias
	Module  string // module name as modules.alias spells it (underscores)
}

// Aliases is a parsed modules.alias, indexed by the bus prefix (the text
// before the first ':') so that a lookup only tries the aliases of the
// device's bus.
type Aliases struct {
	byBus map[string][]Alias
	wild  []Alias // patterns whose bus prefix itself contains glob characters
	n     int
}

// Len returns the number of aliases.
func (a *Aliases) Len() int { return a.n }

// ParseAliases reads modules.alias as written by depmod(8). Comment and
// blank lines are skipped; any other line that is not "alias PATTERN
// MODULE" is an error.
func ParseAliases(r io.Reader) (*Aliases, error) {
	a := &Aliases{byBus: map[string][]Alias{}}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for s.Scan() {
		line++
		t := strings.TrimSpace(s.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		f := strings.Fields(t)
		if len(f) != 3 || f[0] != "alias" {
			return nil, fmt.Errorf("modules.alias line %d: want \"alias PATTERN MODULE\", got %q", line, t)
		}
		al := Alias{Pattern: f[1], Module: f[2]}
		bus, _, _ := strings.Cut(al.Pattern, ":")
		if strings.ContainsAny(bus, "*?[\\") {
			a.wild = append(a.wild, al)
		} else {
			a.byBus[bus] = append(a.byBus[bus], al)
		}
		a.n++
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.alias: %w", err)
	}
	return a, nil
}

// LoadAliases parses the modules.alias file at path.
func LoadAliases(path string) (*Aliases, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a, err := ParseAliases(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// Lookup returns the modules whose aliases match the modalias, each once,
// in the order of modules.alias (like `modprobe -R`).
func (a *Aliases) Lookup(modalias string) []string {
	bus, _, _ := strings.Cut(modalias, ":")
	var mods []string
	seen := map[string]bool{}
	try := func(list []Alias) {
		for _, al := range list {
			if !seen[al.Module] && Fnmatch(al.Pattern, modalias) {
				seen[al.Module] = true
				mods = append(mods, al.Module)
			}
		}
	}
	try(a.byBus[bus])
	try(a.wild)
	return mods
}

// ModuleDir returns /lib/modules/<release> under root, or
// /usr/lib/modules/<release> when only that exists.
func ModuleDir(root, release string) string {
	d := filepath.Join(root, "lib/modules", release)
	if _, err := os.Stat(d); err != nil {
		if u := filepath.Join(root, "usr/lib/modules", release); exists(u) {
			return u
		}
	}
	return d
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Modaliases returns the distinct modaliases of the devices under sys
// (normally /sys), sorted: every bus device's modalias
// (sys/bus/*/devices/*/modalias, the devices udev's coldplug triggers)
// plus the CPU's (sys/devices/system/cpu/modalias). This is the set a
// full walk of sys/devices finds, at a fraction of the cost, which
// matters under emulation. Unreadable files are skipped: sysfs has
// attributes that fail to read on some hardware, and devices vanish.
func Modaliases(sys string) ([]string, error) {
	if _, err := os.Stat(filepath.Join(sys, "bus")); err != nil {
		return nil, fmt.Errorf("reading device modaliases: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(sys, "bus/*/devices/*/modalias"))
	if err != nil {
		return nil, err
	}
	files = append(files, filepath.Join(sys, "devices/system/cpu/modalias"))
	set := map[string]bool{}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if m := strings.TrimSpace(string(b)); m != "" {
			set[m] = true
		}
	}
	out := make([]string, 0, len(set))
	for m := range set {
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}
