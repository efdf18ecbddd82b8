package coldplug

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// A real module tree: the Debian kernel package the rescue system ships
// (the .deb cached under .cache/ at the repository root by the initramfs
// build, or downloaded here with apt-get), unpacked and indexed with
// depmod(8) — Debian's package carries no modules.alias, depmod writes it
// at install time.
var (
	treeOnce    sync.Once
	treeRoot    string
	treeRelease string
	treeErr     error
	tmpDirs     []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range tmpDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", fmt.Errorf("no go.mod above the test directory")
		}
		d = p
	}
}

// kernelDeb finds linux-image-*-amd64*.deb in .cache/, downloading the
// version linux-image-amd64 depends on when none is cached and apt works.
func kernelDeb() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cache := filepath.Join(root, ".cache")
	find := func() string {
		m, _ := filepath.Glob(filepath.Join(cache, "linux-image-*-amd64_*.deb"))
		for _, f := range m {
			if !strings.Contains(f, "-dbg") && !strings.Contains(f, "unsigned") {
				return f
			}
		}
		if len(m) > 0 {
			return m[0]
		}
		return ""
	}
	if f := find(); f != "" {
		return f, nil
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("no kernel .deb in %s and apt-cache failed: %v", cache, err)
	}
	pkg := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*-amd64)`).FindSubmatch(out)
	if pkg == nil {
		return "", fmt.Errorf("no kernel .deb in %s and linux-image-amd64 names no kernel package", cache)
	}
	tmp, err := os.MkdirTemp("", "kdeb")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("apt-get", "download", string(pkg[1]))
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("no kernel .deb in %s and apt-get download %s failed: %v: %s", cache, pkg[1], err, out)
	}
	m, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(m) != 1 {
		return "", fmt.Errorf("apt-get download %s left %d files", pkg[1], len(m))
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(cache, filepath.Base(m[0]))
	if err := os.Rename(m[0], dst); err != nil {
		// Another package's test may have raced us; use theirs.
		if f := find(); f != "" {
			return f, nil
		}
		return "", err
	}
	return dst, nil
}

func kernelTree(t *testing.T) (root, release string) {
	t.Helper()
	treeOnce.Do(func() {
		for _, tool := range []string{"dpkg-deb", "depmod", "tar"} {
			if _, err := exec.LookPath(tool); err != nil {
				if _, err2 := os.Stat("/usr/sbin/" + tool); err2 != nil {
					treeErr = fmt.Errorf("%s not installed (Debian packages dpkg, kmod, tar)", tool)
					return
				}
			}
		}
		deb, err := kernelDeb()
		if err != nil {
			treeErr = err
			return
		}
		dir, err := os.MkdirTemp("", "kmods")
		if err != nil {
			treeErr = err
			return
		}
		tmpDirs = append(tmpDirs, dir)
		// depmod's index of this .deb is cached next to it: unpacking
		// 400 MB of modules on every run is slow. A cached index is laid
		// out with empty placeholder .ko files, which is all modprobe
		// -R/--show-depends and the loader's dry run look at.
		cache := strings.TrimSuffix(deb, ".deb") + ".kmod-index"
		if rel, err := fromIndexCache(cache, dir); err == nil {
			treeRoot, treeRelease = dir, rel
			return
		}
		cmd := exec.Command("sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" ./lib/modules`, "sh", deb, dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			treeErr = fmt.Errorf("unpacking %s: %v: %s", deb, err, out)
			return
		}
		rels, _ := filepath.Glob(filepath.Join(dir, "lib/modules/*"))
		if len(rels) != 1 {
			treeErr = fmt.Errorf("%s holds %d module trees", deb, len(rels))
			return
		}
		rel := filepath.Base(rels[0])
		depmod := "depmod"
		if _, err := exec.LookPath(depmod); err != nil {
			depmod = "/usr/sbin/depmod"
		}
		if out, err := exec.Command(depmod, "-b", dir, rel).CombinedOutput(); err != nil {
			treeErr = fmt.Errorf("depmod: %v: %s", err, out)
			return
		}
		toIndexCache(filepath.Join(dir, "lib/modules", rel), cache)
		treeRoot, treeRelease = dir, rel
	})
	if treeErr != nil {
		t.Skipf("no real kernel module tree: %v", treeErr)
	}
	return treeRoot, treeRelease
}

// toIndexCache saves the modules.* index files of modDir into cache/<release>/
// (atomically: a temporary directory renamed into place).
func toIndexCache(modDir, cache string) {
	tmp, err := os.MkdirTemp(filepath.Dir(cache), ".kmod-index-*")
	if err != nil {
		return
	}
	defer os.RemoveAll(tmp)
	rel := filepath.Base(modDir)
	if err := os.MkdirAll(filepath.Join(tmp, rel), 0o755); err != nil {
		return
	}
	files, _ := filepath.Glob(filepath.Join(modDir, "modules.*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || os.WriteFile(filepath.Join(tmp, rel, filepath.Base(f)), b, 0o644) != nil {
			return
		}
	}
	os.Rename(tmp, cache)
}

// fromIndexCache lays a cached index out under root/lib/modules/<release>
// with an empty placeholder for every module file modules.dep names.
func fromIndexCache(cache, root string) (string, error) {
	rels, err := filepath.Glob(filepath.Join(cache, "*"))
	if err != nil || len(rels) != 1 {
		return "", fmt.Errorf("no cached index in %s", cache)
	}
	rel := filepath.Base(rels[0])
	modDir := filepath.Join(root, "lib/modules", rel)
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		return "", err
	}
	files, _ := filepath.Glob(filepath.Join(rels[0], "modules.*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(modDir, filepath.Base(f)), b, 0o644); err != nil {
			return "", err
		}
	}
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(dep), "\n") {
		ko, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		p := filepath.Join(modDir, ko)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return "", err
		}
	}
	return rel, nil
}
