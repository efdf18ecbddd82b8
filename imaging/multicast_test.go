package imaging

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/netnstest"
	"github.com/esxi-rescue/rescue/udpcast"
)

// TestUdpcastRestore: a zstd image sent by the stock udp-sender over a
// private veth link (two namespaces of the test's own) restores through
// the whole pipeline; without an expected SHA-256 it is refused up front;
// when the sender dies halfway the restore fails and the target's table
// is untouched.
func TestUdpcastRestore(t *testing.T) {
	gpttest.Need(t, "sgdisk", "udp-sender", "udp-receiver", "cmp")
	a, b := netnstest.Pair(t)
	old := udpcast.Command
	udpcast.Command = b.Command("udp-receiver")
	defer func() { udpcast.Command = old }()
	dir := t.TempDir()
	raw := sgdiskImage(t, dir, 64<<20, testParts)
	fillRandom(t, raw, 20<<20, 6<<20, 7) // incompressible data for the rate limit
	img := filepath.Join(dir, "esxi.img.zst")
	o := copyOpts(t, raw, img)
	o.Compress = "zstd"
	res := mustCopy(t, o)
	send := func(extra ...string) *exec.Cmd {
		args := a.Command(append([]string{"udp-sender", "--file", img, "--interface", a.Dev, "--nokbd", "--min-receivers", "1"}, extra...)...)
		cmd := exec.Command(args[0], args[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	src := "udpcast://" + b.Dev + "?port=9000&start-timeout=20&receive-timeout=3"
	dst := sgdiskImage(t, dir, 96<<20, []gpttest.Part{{Slot: 1, First: 2048, Last: 150000, Type: "8300"}})
	before, _ := os.ReadFile(dst)

	opt := copyOpts(t, src, dst)
	opt.Yes = true
	if _, err := Copy(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "needs the image's SHA-256") {
		t.Fatalf("without -sha256: %v", err)
	}

	t.Run("sender dies", func(t *testing.T) {
		cmd := send("--max-bitrate", "10m")
		o := opt
		o.SHA256, o.UndoPath = res.SHA256, filepath.Join(t.TempDir(), "undo.json")
		// Killed halfway: once the receiver has 1 MiB of the ~6 MiB
		// image (at 10 Mbit/s the rest takes seconds more). A kill at a
		// fixed time could come before the receiver even started (the
		// restore's table work and fsyncs first, on a loaded machine).
		var once sync.Once
		o.ProgressInterval = 20 * time.Millisecond
		o.OnProgress = func(p Progress) {
			if p.Phase == "restore" && p.Done >= 1<<20 {
				once.Do(func() { cmd.Process.Kill() })
			}
		}
		r, err := Copy(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "partition table was not written") {
			t.Fatalf("want a failed restore, got %v", err)
		}
		t.Logf("as expected: %v", err)
		// The target's table is invalidated, its undo file puts it back.
		if st := readState(t, dst); st.valid() {
			t.Fatalf("the target still shows a valid GPT after the failed restore")
		}
		if err := applyUndo(t, dst, r.TableUndoPath); err != nil {
			t.Fatal(err)
		}
		after, _ := os.ReadFile(dst)
		if !sameRegions(after, before, tableRegions(int64(len(before)))) {
			t.Fatalf("the undo file did not put the target's GPT back")
		}
	})
	t.Run("whole", func(t *testing.T) {
		send()
		o := opt
		o.SHA256, o.UndoPath = res.SHA256, filepath.Join(dir, "undo.json")
		r, err := Copy(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if r.Compression != "zstd" || r.SHA256 != res.SHA256 {
			t.Errorf("result %+v", r)
		}
		if out, err := exec.Command("cmp", "-i", "1048576", "-n", "60000000", raw, dst).CombinedOutput(); err != nil {
			t.Errorf("cmp: %v %s", err, out)
		}
		gpttest.Run(t, "sgdisk", "-v", dst)
	})
}
