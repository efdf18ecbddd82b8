// Command mkmodules copies a chosen set of kernel modules, with everything
// they depend on and the firmware they ask for, from an unpacked Debian
// linux-image package into a staging tree for the rescue initramfs.
//
//	mkmodules -root KERNELTREE -kver KVER -list modules.txt [-firmware FWROOT,...] -o STAGE
//
// KERNELTREE holds lib/modules/KVER with modules.dep (run depmod -b first).
// Modules land at their real paths under STAGE/lib/modules/KVER/ together
// with modules.builtin, modules.builtin.modinfo and modules.order; run
// `depmod -b STAGE KVER` afterwards to index the subset.
//
// Each FWROOT is an unpacked firmware package (lib/firmware/..., and
// usr/share/doc/<package>/copyright). Only the files the bundled modules
// declare (modinfo firmware=) are copied, from the first root that has
// them, to STAGE/lib/firmware; the copyright files of the packages that
// gave at least one file go to STAGE/usr/share/doc/<package>/copyright.
// STAGE/lib/modules/KVER/firmware.txt lists what was bundled ("module:
// file package") and firmware-missing.txt what no root has.
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
	fw := flag.String("firmware", "", "comma-separated unpacked firmware packages (each contains lib/firmware); optional")
	out := flag.String("o", "", "staging directory to write lib/modules and lib/firmware into")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `usage: mkmodules -root DIR -kver KVER -list FILE [-firmware DIR,DIR...] -o DIR

Copies the listed kernel modules plus their dependencies (modules.dep and
modules.softdep) and the firmware they name from an unpacked kernel package
into a staging tree, at their real paths, ready for depmod -b, with only
the firmware files the modules declare and their packages' copyright files.

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if *root == "" || *kver == "" || *list == "" || *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	var fwRoots []string
	for _, r := range strings.Split(*fw, ",") {
		if r != "" {
			fwRoots = append(fwRoots, r)
		}
	}
	if err := run(*root, *kver, *list, fwRoots, *out); err != nil {
		fmt.Fprintf(os.Stderr, "mkmodules: %v\n", err)
		os.Exit(2)
	}
}

func run(root, kver, list string, fwRoots []string, out string) error {
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
	pkgUsed := map[string]bool{} // firmware roots that gave a file
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
			fr, pkg := findFirmware(fwRoots, f)
			if fr == "" {
				fwMissing = append(fwMissing, m+": "+f)
				continue
			}
			n, err := copyFile(filepath.Join(fr, "lib/firmware", f), filepath.Join(out, "lib/firmware", f))
			if err != nil {
				return err
			}
			total += n
			fwFound = append(fwFound, m+": "+f+" "+pkg)
			if !pkgUsed[fr] {
				pkgUsed[fr] = true
				if err := copyCopyright(fr, out); err != nil {
					return err
				}
			}
		}
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if _, err := copyFile(filepath.Join(src, f), filepath.Join(dst, f)); err != nil {
			return err
		}
	}
	sort.Strings(fwMissing)
	sort.Strings(fwFound)
	var roots []string
	for _, r := range fwRoots {
		roots = append(roots, filepath.Base(r))
	}
	report := "# Firmware named by the bundled modules (modinfo firmware=) that none of the\n" +
		"# bundled firmware packages ships (" + strings.Join(roots, ", ") + ").\n" +
		"# The drivers load without it; some devices then stay down.\n" +
		strings.Join(fwMissing, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dst, "firmware-missing.txt"), []byte(report), 0o644); err != nil {
		return fmt.Errorf("writing firmware report: %w", err)
	}
	included := "# Firmware bundled under /lib/firmware: \"module: file package_version\"\n" + strings.Join(fwFound, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dst, "firmware.txt"), []byte(included), 0o644); err != nil {
		return fmt.Errorf("writing firmware list: %w", err)
	}
	fmt.Printf("mkmodules: %d modules (%d requested, %d built in), %.1f MiB; firmware: %d files included, %d missing (see %s)\n",
		len(sel.Modules), len(names), len(sel.Builtin), float64(total)/(1<<20), len(fwFound), len(fwMissing),
		filepath.Join("lib/modules", kver, "firmware-missing.txt"))
	return nil
}

// findFirmware returns the first root that has lib/firmware/file (a
// regular file, or a symlink to one inside the package) and the root's
// package name (its directory's base name, package_version).
func findFirmware(roots []string, file string) (root, pkg string) {
	for _, r := range roots {
		if st, err := os.Stat(filepath.Join(r, "lib/firmware", file)); err == nil && st.Mode().IsRegular() {
			return r, filepath.Base(r)
		}
	}
	return "", ""
}

// copyCopyright copies root's usr/share/doc/*/copyright files (the
// package's license) into out at the same paths.
func copyCopyright(root, out string) error {
	docs, err := filepath.Glob(filepath.Join(root, "usr/share/doc/*/copyright"))
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		return fmt.Errorf("firmware package %s has no usr/share/doc/*/copyright", root)
	}
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			return err
		}
		if _, err := copyFile(d, filepath.Join(out, rel)); err != nil {
			return err
		}
	}
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
