package qemutests

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestFirmwareInImage checks the firmware of the built initramfs with
// host tools (zstd, cpio, modinfo), not with the build's own code: every
// file firmware.txt says was bundled is in the cpio listing and nothing
// else is under lib/firmware; firmware.txt plus firmware-missing.txt
// cover exactly what `modinfo -F firmware` of the bundled modules
// declares; bnx2x's firmware (Broadcom NetXtreme II, non-free-firmware)
// is there, with the packages' copyright files. With RESCUE_NONFREE=0 in
// the environment only the listing/firmware.txt agreement is checked.
func TestFirmwareInImage(t *testing.T) {
	a := artifacts(t)
	for _, c := range []string{"zstd", "cpio", "modinfo"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not installed: %v", c, err)
		}
	}
	kver, err := os.ReadFile(filepath.Join(OutDir(), "kver"))
	if err != nil {
		t.Fatalf("%v: run ./build.sh first", err)
	}
	modDir := filepath.Join(OutDir(), "modules", strings.TrimSpace(string(kver)))
	out, err := exec.Command("sh", "-c", `zstd -dc "$1" | cpio -t --quiet`, "sh", a.Initramfs).Output()
	if err != nil {
		t.Fatalf("listing %s: %v", a.Initramfs, err)
	}
	inImage := map[string]bool{}
	var fwInImage []string
	for _, l := range strings.Split(string(out), "\n") {
		inImage[l] = true
		if strings.HasPrefix(l, "lib/firmware/") {
			fwInImage = append(fwInImage, strings.TrimPrefix(l, "lib/firmware/"))
		}
	}
	bundled := listFile(t, filepath.Join(modDir, "firmware.txt"))           // "module: file pkg"
	missingFw := listFile(t, filepath.Join(modDir, "firmware-missing.txt")) // "module: file"
	var files []string
	pkgs := map[string]bool{}
	for _, l := range bundled {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("firmware.txt line %q: want \"module: file package_version\"", l)
		}
		files = append(files, f[1])
		pkgs[strings.SplitN(f[2], "_", 2)[0]] = true
		if !inImage["lib/firmware/"+f[1]] {
			t.Errorf("firmware.txt lists %s but the initramfs has no lib/firmware/%s", f[1], f[1])
		}
	}
	// Everything else under lib/firmware must be a directory of listed files.
	listed := map[string]bool{}
	for _, f := range files {
		for d := f; d != "."; d = filepath.Dir(d) {
			listed[d] = true
		}
	}
	for _, f := range fwInImage {
		if !listed[f] {
			t.Errorf("the initramfs has lib/firmware/%s, which firmware.txt does not list", f)
		}
	}
	for p := range pkgs {
		if !inImage["usr/share/doc/"+p+"/copyright"] {
			t.Errorf("firmware from %s is bundled but usr/share/doc/%s/copyright is not in the image", p, p)
		}
	}
	// What the modules declare, read by modinfo(8).
	declared := map[string]bool{}
	kos, _ := filepath.Glob(filepath.Join(modDir, "kernel", "*"))
	if len(kos) == 0 {
		t.Fatalf("no modules under %s", modDir)
	}
	err = filepath.Walk(filepath.Join(modDir, "kernel"), func(p string, info os.FileInfo, err error) error {
		if err != nil || !strings.HasSuffix(p, ".ko") {
			return err
		}
		o, err := exec.Command("modinfo", "-F", "firmware", p).Output()
		if err != nil {
			t.Errorf("modinfo %s: %v", p, err)
			return nil
		}
		for _, f := range strings.Fields(string(o)) {
			declared[f] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	accounted := map[string]bool{}
	for _, f := range files {
		accounted[f] = true
	}
	for _, l := range missingFw {
		_, f, _ := strings.Cut(l, ": ")
		accounted[f] = true
	}
	var notAccounted []string
	for f := range declared {
		if !accounted[f] {
			notAccounted = append(notAccounted, f)
		}
	}
	sort.Strings(notAccounted)
	if len(notAccounted) > 0 {
		t.Errorf("modules declare firmware that is neither bundled nor listed as missing: %v", notAccounted)
	}
	if len(accounted) != len(declared) {
		t.Errorf("firmware.txt + firmware-missing.txt name %d files, the modules declare %d", len(accounted), len(declared))
	}
	t.Logf("%d firmware files bundled from %d packages, %d missing, %d declared by the modules", len(files), len(pkgs), len(missingFw), len(declared))
	if os.Getenv("RESCUE_NONFREE") == "0" {
		return
	}
	var bnx2x int
	for f := range declared {
		if strings.HasPrefix(f, "bnx2x/") {
			bnx2x++
			if !inImage["lib/firmware/"+f] {
				t.Errorf("bnx2x declares %s but the image lacks lib/firmware/%s (non-free-firmware not bundled?)", f, f)
			}
		}
	}
	if bnx2x == 0 {
		t.Errorf("bnx2x declares no firmware: is bnx2x still in initramfs/modules.txt?")
	}
}

// listFile returns the non-comment, non-blank lines of a file.
func listFile(t *testing.T, p string) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("%v: run ./build.sh first", err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
