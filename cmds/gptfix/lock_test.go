package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"golang.org/x/sys/unix"
)

// holdEnv makes the test binary a helper process that opens the path it
// names O_RDWR|O_EXCL, prints "held", and keeps it open until its stdin
// closes: "another program" holding a block device exclusively.
const holdEnv = "GPTFIX_TEST_HOLD_EXCL"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_EXCL, 0)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Println("held")
		bufio.NewReader(os.Stdin).ReadString('\n')
		unix.Close(fd)
		os.Exit(0)
	}
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// gptfixBinary builds gptfix once for the tests that need a real process.
func gptfixBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gptfix-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "gptfix")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// startPaused starts gptfix -yes on target with the test pause set and
// returns once it has written the backup and paused (holding the disk).
func startPaused(t *testing.T, bin, undoDir, target string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "-yes", "-undo-dir", undoDir, target)
	cmd.Env = append(os.Environ(), "GPTFIX_TEST_PAUSE=120")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 4096)
	var seen []byte
	for !bytes.Contains(seen, []byte("GPTFIX: PAUSE")) {
		n, err := stderr.Read(buf)
		seen = append(seen, buf[:n]...)
		if err != nil {
			t.Fatalf("no pause marker before %v; stderr:\n%s", err, seen)
		}
	}
	return cmd
}

// TestConcurrentRuns: while one gptfix -yes is paused between its backup
// and primary writes, a second one on the same image file or block
// device refuses (flock / O_EXCL), writes nothing and leaves no undo
// file; the first then finishes cleanly.
func TestConcurrentRuns(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	bin := gptfixBinary(t)
	for _, onDevice := range []bool{false, true} {
		t.Run(map[bool]string{false: "file", true: "device"}[onDevice], func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "d.img")
			esxiImage(t, img, "5.0", 8*gib)
			os.Truncate(img, 9*gib)
			target := img
			if onDevice {
				target = gpttest.Loop(t, img)
			}
			first := startPaused(t, bin, filepath.Join(dir), target)
			head := gpttest.ReadAt(t, img, 0, 34*512)
			tail := gpttest.ReadAt(t, img, 9*gib-33*512, 33*512)

			undo2 := t.TempDir()
			out, err := exec.Command(bin, "-yes", "-undo-dir", undo2, target).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "another program has the disk open") {
				t.Errorf("second gptfix -yes while the first holds %s: %v, want exit 2 with \"another program has the disk open\"\n%s", target, err, out)
			}
			if ents, _ := os.ReadDir(undo2); len(ents) != 0 {
				t.Errorf("the refused run left an undo file: %v", ents)
			}
			if !bytes.Equal(head, gpttest.ReadAt(t, img, 0, 34*512)) || !bytes.Equal(tail, gpttest.ReadAt(t, img, 9*gib-33*512, 33*512)) {
				t.Error("the refused run wrote to the disk")
			}
			// A read-only look is still possible meanwhile.
			if out, err := exec.Command(bin, "-check", target).CombinedOutput(); err != nil && !strings.Contains(string(out), "Problems") {
				t.Errorf("gptfix -check while held: %v\n%s", err, out)
			}
			// Let the first run go on: SIGCONT does not end the sleep, so
			// kill it (as the power-cut test does) and finish with a rerun.
			first.Process.Kill()
			first.Wait()
			if out, err := exec.Command(bin, "-yes", "-undo-dir", undo2, target).CombinedOutput(); err != nil {
				t.Fatalf("rerun after the first ended: %v\n%s", err, out)
			}
			gpttest.SgdiskVerify(t, img)
		})
	}
}

// TestHeldExclusively: a block device another process holds open with
// O_EXCL is refused with a clear message and not written.
func TestHeldExclusively(t *testing.T) {
	gpttest.Need(t, "sgdisk")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.img")
	esxiImage(t, img, "5.0", 8*gib)
	os.Truncate(img, 9*gib)
	loop := gpttest.Loop(t, img)
	holder := exec.Command(os.Args[0])
	holder.Env = append(os.Environ(), holdEnv+"="+loop)
	stdin, _ := holder.StdinPipe()
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); holder.Wait() }()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "held" {
		t.Fatalf("the holder could not open %s exclusively: %q", loop, line)
	}
	head := gpttest.ReadAt(t, img, 0, 34*512)
	start := time.Now()
	code, out, errOut := gptfix(t, "-yes", "-undo-dir", t.TempDir(), loop)
	if code != 2 || !strings.Contains(errOut, "another program has the disk open") {
		t.Errorf("gptfix -yes on a device held O_EXCL: exit %d, want 2 with \"another program has the disk open\"\n%s%s", code, out, errOut)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the refusal took %v", d)
	}
	if !bytes.Equal(head, gpttest.ReadAt(t, img, 0, 34*512)) {
		t.Error("the refused run wrote to the disk")
	}
	// -undo -yes is refused the same way.
	code, _, errOut = gptfix(t, "-undo", filepath.Join(dir, "none.json"), "-yes", loop)
	if code != 2 {
		t.Errorf("-undo on a held device: exit %d\n%s", code, errOut)
	}
}
