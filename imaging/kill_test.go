package imaging

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The SIGKILL loop shared by TestKilledRestoreNeverValid and
// TestKilledDeltaRestore.

// killImageSize is the size of killImage's image.
const killImageSize = 32 << 20

// killImage makes the image the kill tests restore: killImageSize bytes
// partitioned by sgdisk (testParts[:2]) with random data in every other
// MiB. It returns the file and its bytes.
func killImage(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	img := sgdiskImage(t, dir, killImageSize, testParts[:2])
	for off := int64(1 << 20); off < killImageSize-(1<<20); off += 2 << 20 {
		fillRandom(t, img, off, 1<<20, uint64(off))
	}
	image, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, image
}

// killPoint is a moment to kill a restore at: after feeding it feed bytes
// of the image, and delay later.
type killPoint struct {
	feed  int64
	delay time.Duration
}

// killPoints returns kill points after every step MiB of an image of size
// bytes (each with a random delay under 20 ms), then after all of it with
// each delay of ends (in ms, plus a random part of a ms): the end of a
// restore (held-back tables, fsync, fix-up).
func killPoints(rng *rand.Rand, size, step int64, ends []int) []killPoint {
	var points []killPoint
	for k := int64(0); k <= size>>20; k += step {
		points = append(points, killPoint{k << 20, time.Duration(rng.IntN(20)) * time.Millisecond})
	}
	for _, ms := range ends {
		points = append(points, killPoint{size, time.Duration(ms)*time.Millisecond + time.Duration(rng.IntN(1000))*time.Microsecond})
	}
	return points
}

// killRun is a series of restores of image onto dst, each killed.
type killRun struct {
	imgcopy string      // the imgcopy binary
	image   []byte      // the image, fed on stdin
	orig    []byte      // what dst holds before each restore
	dst     string      // the target: a file or a loop device
	size    int64       // dst's size
	dir     string      // where the undo files go
	args    []string    // more imgcopy arguments (-delta)
	points  []killPoint // when to kill
	// rerunWhole: the restore run again after a kill in its last writes
	// must leave all of dst equal to the image, not only the image's data
	// under a valid table.
	rerunWhole bool
}

// killRestores runs imgcopy ARGS -yes -sha256 -undo U - DST once per kill
// point, SIGKILLs it there and checks the target. It is either untouched
// (orig), or complete (every byte of the image's data and a valid table
// per gpt.Read: a kill between the backup GPT and the head, both written
// only after the checksum matched, leaves the image's backup valid and
// the head pending), or shows no valid GPT to sgdisk -v and gpt.Read:
// never "valid and wrong". Where an undo file was left for a target that
// is not complete, it puts the old table back byte for byte, or, when all
// data is already the image's (killed while the held tables went out),
// it may refuse to go back over that data; then running the restore
// again must complete the target. It fails the test unless the kills
// spread over the restore (a third left it invalid, one complete).
func killRestores(t *testing.T, kr killRun) {
	t.Helper()
	sum := sha256Of(kr.image)
	data := [2]int{1 << 20, len(kr.image) - (1 << 20)}
	ourData := func(b []byte) bool { return bytes.Equal(b[data[0]:data[1]], kr.image[data[0]:data[1]]) }
	regions := tableRegions(kr.size)
	counts := map[string]int{}
	points := append([]killPoint(nil), kr.points...)
	for i := 0; i < len(points); i++ {
		pt := points[i]
		if err := writeWhole(kr.dst, kr.orig); err != nil {
			t.Fatal(err)
		}
		undo := filepath.Join(kr.dir, fmt.Sprintf("undo-%d.json", i))
		args := append([]string{"-q", "-progress", "none"}, kr.args...)
		cmd := exec.Command(kr.imgcopy, append(args, "-yes", "-sha256", sum, "-undo", undo, "-", kr.dst)...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		_, werr := stdin.Write(kr.image[:pt.feed])
		if pt.feed == int64(len(kr.image)) {
			stdin.Close()
		}
		if werr == nil {
			time.Sleep(pt.delay) // the kill's moment, not a wait for a state
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err = <-done
		stdin.Close()
		exited := err == nil
		now, rerr := readWhole(kr.dst, kr.size)
		if rerr != nil {
			t.Fatal(rerr)
		}
		st := readState(t, kr.dst)
		state := "invalid"
		switch {
		case bytes.Equal(now, kr.orig):
			state = "untouched"
		case ourData(now) && st.ours:
			state = "complete"
		case st.valid():
			t.Errorf("kill %d (after %d MiB + %v): the target is valid and wrong (ours %v, sgdisk %v):\n%s\nstderr: %s",
				i, pt.feed>>20, pt.delay, st.ours, st.sgdisk, st.sgdiskOut, stderr.String())
		}
		if exited && state != "complete" {
			t.Errorf("kill %d: imgcopy exited normally but the target is %s: %s", i, state, stderr.String())
		}
		counts[state]++
		tu := strings.TrimSuffix(undo, ".json") + ".before-restore.json"
		if _, err := os.Stat(tu); err == nil && state != "complete" {
			if err := applyUndo(t, kr.dst, tu); err != nil && ourData(now) {
				// Killed while the held tables went out, after the checksum
				// matched: the old table's undo refuses to go back over the
				// image's data (some of its sectors changed again); running
				// the restore again must complete the target.
				counts["finishing"]++
				rerunRestore(t, kr.imgcopy, kr.image, kr.dst, append(append([]string{}, kr.args...), "-sha256", sum)...)
				again, _ := readWhole(kr.dst, kr.size)
				ok := ourData(again) && readState(t, kr.dst).ours
				if kr.rerunWhole {
					ok = bytes.Equal(again, kr.image)
				}
				if !ok {
					t.Errorf("kill %d: the restore run again after a kill in its last writes (%v) did not complete the target", i, err)
				}
			} else if err != nil {
				t.Errorf("kill %d: the undo file %s: %v", i, tu, err)
			} else if now, _ := readWhole(kr.dst, kr.size); !sameRegions(now, kr.orig, regions) {
				t.Errorf("kill %d: the undo file did not put the old table back byte for byte", i)
			}
			counts["undone"]++
		} else if state == "invalid" {
			t.Errorf("kill %d: the table was invalidated but no undo file %s is there", i, tu)
		}
		// The last planned kills come after the whole image was fed; on a
		// slow machine (CI: 2 loaded cores) the restore's end — held-back
		// tables, fsyncs, fix-up — may outlast them all. Then kill later
		// and later (doubling, up to 30 s) until one finds the restore
		// complete, so that "complete" is always reached and checked.
		if i == len(points)-1 && counts["complete"] == 0 && pt.feed == int64(len(kr.image)) && pt.delay < 30*time.Second {
			points = append(points, killPoint{pt.feed, 2*pt.delay + 100*time.Millisecond})
		}
	}
	t.Logf("%d kills (%d planned): %v", len(points), len(kr.points), counts)
	if counts["invalid"] < len(kr.points)/3 || counts["complete"] == 0 {
		t.Errorf("the kills did not spread over the restore (%v): the test proved little", counts)
	}
}

// rerunRestore runs imgcopy -yes ARGS - DST with the whole image on stdin
// and fails the test unless it succeeds.
func rerunRestore(t *testing.T, imgcopy string, image []byte, dst string, args ...string) {
	t.Helper()
	cmd := exec.Command(imgcopy, append(append([]string{"-q", "-progress", "none", "-yes", "-undo", filepath.Join(t.TempDir(), "undo.json")}, args...), "-", dst)...)
	cmd.Stdin = bytes.NewReader(image)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("imgcopy run again: %v: %s", err, out)
	}
}
