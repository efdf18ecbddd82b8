package qemutests

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/u-root/u-root/pkg/cpio"
)

// EsxibootInitramfs writes dst: the rescue initramfs base followed by a
// small uncompressed cpio archive that replaces /bin/uinit with the
// esxibootinit test program (and empties /etc/uinit.flags). The kernel
// unpacks concatenated archives in order, later files replacing earlier
// ones, so everything else is exactly the shipped rescue system. Boot it
// with uroot.uinitargs="-dry-run -device /dev/vda" and watch for
// "ESXIBOOT-TEST: exit N".
func EsxibootInitramfs(base, dst string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "esxibootinit-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "uinit")
	cmd := exec.Command(goBinary(), "build", "-trimpath", "-o", bin, "./qemu-tests/esxibootinit")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build esxibootinit: %w\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		return err
	}

	// No /bbin/uinit may shadow ours: u-root's init tries /bbin/uinit first.
	return withOverlay(base, dst, []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("etc", 0o755),
		cpio.StaticRecord(prog, cpio.Info{Name: "bin/uinit", Mode: cpio.S_IFREG | 0o755}),
		cpio.StaticFile("etc/uinit.flags", "", 0o444),
	})
}

// InitramfsWithFiles writes dst: the rescue initramfs base followed by a
// small uncompressed cpio archive adding files (path in the rescue system,
// without the leading slash → contents, mode 0644; their directories are
// made), e.g. a layout file a test passes as rescue.ref=/PATH.
func InitramfsWithFiles(base, dst string, files map[string][]byte) error {
	var recs []cpio.Record
	dirs := map[string]bool{}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		var parents []string
		for d := filepath.Dir(name); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			recs = append(recs, cpio.Directory(d, 0o755))
		}
		recs = append(recs, cpio.StaticRecord(files[name], cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644}))
	}
	return withOverlay(base, dst, recs)
}

// withOverlay writes dst: the initramfs base followed by a small
// uncompressed cpio archive of recs. The kernel unpacks concatenated
// archives in order, later files replacing earlier ones.
func withOverlay(base, dst string, recs []cpio.Record) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	in, err := os.Open(base)
	if err != nil {
		return fmt.Errorf("rescue initramfs: %w", err)
	}
	n, err := io.Copy(out, in)
	in.Close()
	if err != nil {
		return err
	}
	// Archives in an initramfs start on 4-byte boundaries.
	if pad := (4 - n%4) % 4; pad > 0 {
		out.Write(make([]byte, pad))
	}
	w := cpio.Newc.Writer(out)
	if err := cpio.WriteRecords(w, recs); err != nil {
		return fmt.Errorf("overlay cpio: %w", err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return fmt.Errorf("overlay cpio: %w", err)
	}
	return out.Close()
}
