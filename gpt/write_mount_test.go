package gpt_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// TestInUse mounts an image through a loop device and checks that InUse
// refuses both the image file and the loop device, and accepts them again
// once unmounted. Needs root, loop devices and ext2 support.
func TestInUse(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup and mount")
	}
	for _, tool := range []string{"losetup", "mkfs.ext2", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not available: %v", tool, err)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	gpttest.Run(t, "mkfs.ext2", "-q", "-F", img)
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()

	if why, err := gpt.InUse(img); err != nil || len(why) != 0 {
		t.Fatalf("unmounted image: %v %v", why, err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", loop, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount ext2 here: %v %s", err, out)
	}
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	}()
	for _, target := range []string{img, loop} {
		why, err := gpt.InUse(target)
		if err != nil || len(why) == 0 || !strings.Contains(strings.Join(why, ";"), "mounted on "+mnt) {
			t.Errorf("InUse(%s) = %v, %v; want it mounted on %s", target, why, err, mnt)
		}
	}
	gpttest.Run(t, "umount", mnt)
	mounted = false
	if why, err := gpt.InUse(loop); err != nil || len(why) != 0 {
		t.Errorf("after umount: %v %v", why, err)
	}
}
