// Command mkmodules copies a chosen set of kernel modules, with everything
// they depend on and the firmware they ask for, from an unpacked Debian
// linux-image package into a staging tree for the rescue initramfs.
//
//	mkmodules -root KERNELTREE -kver KVER -list modules.txt [-firmware FWROOT] -o STAGE
//
// KERNELTREE holds lib/modules/KVER with modules.dep (run depmod -b first).
// Modules land at their real paths under STAGE/lib/modules/KVER/ together
// with modules.builtin, modules.builtin.modinfo and modules.order; run
// `depmod -b STAGE KVER` afterwards to index the subset. Firmware found
// under FWROOT/lib/firmware goes to STAGE/lib/firmware; firmware that is
// not there (Debian ships most of it in non-free-firmware) is listed in
// STAGE/lib/modules/KVER/firmware-missing.txt.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/esxi-rescue/rescue/initramfs/kmod"
)

func main() {
	root := flag.String("root", "", "unpacked kernel package (contains lib/modules/KVER)")
	kver := flag.String("kver", "", "kernel version (the directory name under lib/modules)")
	list := flag.String("list", "", "file with module names, one a line (# comments)")
	fw := flag.String("firmware", "", "unpacked firmware packages (contains lib/firmware); optional")
	out := flag.String("o", "", "staging directory to write lib/modules and lib/firmware into")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `usage: mkmodules -root DIR -kver KVER -list FILE [-firmware DIR] -o DIR

Copies the listed kernel modules plus their dependencies (modules.dep and
modules.softdep) and the firmware they name from an unpacked kernel package
into a staging tree, at their real paths, ready for depmod -b.

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if *root == "" || *kver == "" || *list == "" || *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*root, *kver, *list, *fw, *out); err != nil {
		fmt.Fprintf(os.Stderr, "mkmodules: %v\n", err)
		os.Exit(2)
	}
}

func run(root, kver, list, fwRoot, out string) error {
	names, err := readList(list)
	if err != nil {
		return err
	}
	src := filepath.Join(root, "lib/modules", kver)
	idx, err := kmod.Load(src)
	if err != nil {
		return err
	}
	sel, err := idx.Resolve(names)
	if err != nil {
		return err
	}
	dst := filepath.Join(out, "lib/modules", kver)
	var total int64
	fwSeen := map[string]bool{}
	var fwFound, fwMissing []string
	for _, m := range sel.Modules {
		rel := idx.Path[m]
		n, err := copyFile(filepath.Join(src, rel), filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		total += n
		info, err := kmod.ModInfo(filepath.Join(src, rel))
		if err != nil {
			return err
		}
		for _, f := range info["firmware"] {
			if fwSeen[f] {
				continue
			}
			fwSeen[f] = true
			p := filepath.Join(fwRoot, "lib/firmware", f)
			if fwRoot != "" {
				if _, err := os.Stat(p); err == nil {
					n, err := copyFile(p, filepath.Join(out, "lib/firmware", f))
					if err != nil {
						return err
					}
					total += n
					fwFound = append(fwFound, f)
					continue
				}
			}
			fwMissing = append(fwMissing, m+": "+f)
		}
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if _, err := copyFile(filepath.Join(src, f), filepath.Join(dst, f)); err != nil {
			return err
		}
	}
	sort.Strings(fwMissing)
	report := "# Firmware named by the bundled modules but not shipped in Debian main\n" +
		"# (most is in non-free-firmware: firmware-bnx2, firmware-bnx2x, firmware-misc-nonfree, ...).\n" +
		"# The drivers load without it; some devices then stay down.\n" +
		strings.Join(fwMissing, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dst, "firmware-missing.txt"), []byte(report), 0o644); err != nil {
		return fmt.Errorf("writing firmware report: %w", err)
	}
	fmt.Printf("mkmodules: %d modules (%d requested, %d built in), %.1f MiB; firmware: %d files included, %d missing (see %s)\n",
		len(sel.Modules), len(names), len(sel.Builtin), float64(total)/(1<<20), len(fwFound), len(fwMissing),
		filepath.Join("lib/modules", kver, "firmware-missing.txt"))
	return nil
}

// readList reads module names, one a line; blank lines and # comments are skipped.
func readList(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading module list: %w", err)
	}
	defer f.Close()
	var names []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line, _, _ := strings.Cut(s.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, line)
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading module list %s: %w", file, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("module list %s is empty", file)
	}
	return names, nil
}

// copyFile copies src to dst (mode 0644), creating dst's directories.
func copyFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	o, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	n, err := io.Copy(o, in)
	if cerr := o.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return n, nil
}
