package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/tmuxtest"
)

// startPane runs command (then "EXIT=$?") in a w x h tmux pane in dir,
// its screen captured with wrapped lines joined.
func startPane(t *testing.T, w, h int, dir, command string) *tmuxtest.Pane {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (build.sh installs it)")
	}
	return tmuxtest.Start(t, tmuxtest.Config{Socket: "rescue-test", W: w, H: h, Dir: dir,
		Command: command + `; echo "EXIT=$?"; sleep 600`, Join: true})
}

// isFrame: the screen holds one whole frame drawn for a w x h terminal:
// the title (of screen title) on the first line, exactly w columns wide,
// and the key help (starting with help) on line h, the last. A frame
// drawn for another size, or one tmux has only partly taken, fails: after
// a resize the old frame has lost its top or bottom lines, and its
// title is as wide as the old terminal.
func isFrame(s string, w, h int, title, help string) bool {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return len(lines) == h && len([]rune(lines[0])) == w &&
		strings.HasPrefix(lines[0], " ESXi rescue dev | "+title) &&
		strings.HasPrefix(strings.TrimSpace(lines[h-1]), help)
}

// homeHelp is the start of the home screen's key help line.
const homeHelp = "Up/Down move  Enter choose"

// checkLayout: the title is on the first line, the key help on the last,
// and no line is wider than the screen.
func checkLayout(t *testing.T, screen string, w, h int) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(screen, "\n"), "\n")
	if len(lines) > h {
		t.Errorf("%d lines on a %d-line screen", len(lines), h)
	}
	if !strings.HasPrefix(lines[0], " ESXi rescue") {
		t.Errorf("first line %q is not the title (the screen scrolled?)", lines[0])
	}
	for i, l := range lines {
		if n := len([]rune(l)); n > w {
			t.Errorf("line %d is %d columns wide (screen %d): %q", i+1, n, w, l)
		}
	}
}

// screenFixture: sda.img an ESXi 6.0 disk compacted as Windows did it,
// sdb.img a blank 2 GiB disk, orig.img the original (not a disk).
func screenFixture(t *testing.T) string {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.img")
	if err := esxi.Create(orig, esxi.CreateOptions{Version: "6.0", Size: 20 << 30, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	if err := esxi.Damage(filepath.Join(dir, "sda.img"), "windows", esxi.DamageOptions{Source: orig}); err != nil {
		t.Fatal(err)
	}
	blank := filepath.Join(dir, "sdb.img")
	os.WriteFile(blank, nil, 0o644)
	os.Truncate(blank, 2<<30)
	os.Mkdir(filepath.Join(dir, "undo"), 0o755)
	os.WriteFile(filepath.Join(dir, "printk"), []byte("4\t4\t1\t7\n"), 0o644)
	return dir
}

func menuCommand(bin string) string {
	return "TERM=xterm-256color " + bin + " -menu -disks sda.img,sdb.img -undo-dir undo -printk printk"
}

// TestScreenFix drives the real program in a pty (tmux): a wrong device
// name is refused with nothing written, the right one fixes the
// compacted table with gpt.Apply, checked with sgdisk and against the
// original's entry array; kernel messages are quiet while it runs and
// the log level is back afterwards.
func TestScreenFix(t *testing.T) {
	bin := build(t)
	dir := screenFixture(t)
	p := startPane(t, 80, 24, dir, menuCommand(bin))
	s := p.Wait(`entries 5,6,7,8,9 out of place`, 60*time.Second)
	checkLayout(t, s, 80, 24)
	if b, _ := os.ReadFile(filepath.Join(dir, "printk")); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("console log level while the screen is up: %q, want 1", b)
	}
	head := gpttest.ReadAt(t, filepath.Join(dir, "sda.img"), 0, 34*512)

	// A resize redraws the screen at the new size.
	p.Tmux("resize-window", "-t", "main", "-x", "100", "-y", "30")
	s = p.Wait(`(?m)^ ESXi rescue dev \| home {70,}$`, 30*time.Second)
	checkLayout(t, s, 100, 30)
	if lines := strings.Split(strings.TrimRight(s, "\n"), "\n"); len([]rune(lines[0])) != 100 {
		t.Errorf("title line %d wide after resizing to 100 columns: %q", len([]rune(lines[0])), lines[0])
	}
	// Back to 80x24: wait for the frame drawn at that size (tmux may
	// hold the window change back, and SIGWINCH reaches the program
	// later); a key typed before it would get a screen drawn 100 wide.
	p.Tmux("resize-window", "-t", "main", "-x", "80", "-y", "24")
	p.WaitFor("the home screen redrawn at 80x24", 30*time.Second, func(s string) bool {
		return isFrame(s, 80, 24, "home", homeHelp) && strings.Contains(s, "out of place")
	})

	p.Keys("1")
	s = p.Wait(`\[f\] Fix it now`, 30*time.Second)
	checkLayout(t, s, 80, 24)
	p.Keys("PageDown")
	checkLayout(t, p.Wait(`lines 2[0-9]-`, 30*time.Second), 80, 24)
	p.Keys("f")
	p.Wait(`type the device name`, 30*time.Second)
	p.Keys("text:/dev/sda", "Enter")
	p.Wait(`You typed "/dev/sda", not sda.img: nothing written`, 30*time.Second)
	if got := gpttest.ReadAt(t, filepath.Join(dir, "sda.img"), 0, 34*512); string(got) != string(head) {
		t.Fatal("the disk changed after a wrong device name")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "undo")); len(ents) != 0 {
		t.Errorf("undo files after a refusal: %v", ents)
	}
	p.Keys("text:sda.img", "Enter")
	// The whole summary: its key help, the last line, is drawn last.
	s = p.WaitFor("the fix's summary", 60*time.Second, func(s string) bool {
		return strings.Contains(s, "written and verified") && strings.Contains(s, "Enter/Esc back to home")
	})
	checkLayout(t, s, 80, 24)
	if !strings.Contains(s, "Now: ESXi 6.x boot disk - entries in their slots") {
		t.Errorf("after the fix:\n%s", s)
	}
	undo, _ := filepath.Glob(filepath.Join(dir, "undo", "gptfix-undo-sda.img-*.json"))
	if len(undo) != 1 || !strings.Contains(strings.Join(strings.Fields(s), ""), filepath.Base(undo[0])) {
		t.Errorf("undo files %v, screen:\n%s", undo, s)
	}
	// Independent checks: sgdisk, and the entry array byte for byte the
	// original's (primary at LBA 2, 32 sectors).
	if out, err := exec.Command("sgdisk", "-v", filepath.Join(dir, "sda.img")).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v: %v\n%s", err, out)
	}
	if a, b := gpttest.ReadAt(t, filepath.Join(dir, "orig.img"), 1024, 32*512), gpttest.ReadAt(t, filepath.Join(dir, "sda.img"), 1024, 32*512); string(a) != string(b) {
		t.Error("the fixed entry array differs from the original's")
	}
	p.Keys("Enter")
	s = p.Wait(`sda.img .*\n.*entries in their slots`, 60*time.Second)
	if strings.Contains(s, "out of place") {
		t.Errorf("home still shows the damage:\n%s", s)
	}
	p.Keys("s")
	s = p.Wait(`EXIT=0`, 30*time.Second)
	if !strings.Contains(s, "gptfix") || !strings.Contains(s, "RESCUE: SHELL") {
		t.Errorf("no banner after Shell:\n%s", s)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "printk")); strings.Join(strings.Fields(string(b)), " ") != "4 4 1 7" {
		t.Errorf("console log level after the screen: %q, want the old 4 4 1 7", b)
	}
}

// TestScreenRestore restores an image served over HTTP (on loopback,
// throttled so that the copy takes seconds) through the menus: the
// progress bar shows bytes, rate and time left; the summary's SHA-256 is
// the image's (computed here), and the disk holds the image (cmp).
func TestScreenRestore(t *testing.T) {
	bin := build(t)
	dir := screenFixture(t)
	img := filepath.Join(dir, "image.raw")
	const size = 96 << 20
	out, err := exec.Command("sh", "-c", fmt.Sprintf("truncate -s %d %s && sgdisk -a 1 -n 1:2048:+8M -n 2:0:+64M %s && head -c 40000000 /dev/urandom | dd of=%s bs=1M seek=2 conv=notrunc 2>/dev/null", size, img, img, img)).CombinedOutput()
	if err != nil {
		t.Fatalf("making the image: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(img)
	sum := sha256.Sum256(data)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		for off := 0; off < len(data); off += 1 << 20 {
			if _, err := w.Write(data[off:min(off+1<<20, len(data))]); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // ~20 MiB/s: about 5 s in all
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()

	p := startPane(t, 80, 24, dir, menuCommand(bin))
	// "[r] Restore" shows while the disks are still being examined: the
	// restore offers the disks of a finished scan, so wait for it.
	p.WaitFor("the home screen with the disks examined", 60*time.Second, func(s string) bool {
		return strings.Contains(s, "[r] Restore") && strings.Contains(s, "out of place")
	})
	p.Keys("r", "text:http://"+ln.Addr().String()+"/image.raw", "Tab", "text:"+hex.EncodeToString(sum[:]), "Enter")
	s := p.Wait(`Disk to write the image onto`, 30*time.Second)
	if strings.Contains(s, "orig.img") {
		t.Errorf("a non-disk offered:\n%s", s)
	}
	p.Keys("2")
	p.Wait(`type the device name \(sdb.img\)`, 30*time.Second)
	p.Keys("text:sdb.img", "Enter")
	s = p.Wait(`\[#+-+\] +\d+%\s+restore: [0-9.]+ MiB of 96.0 MiB, [0-9.]+ MiB/s, \d+:\d\d left`, 30*time.Second)
	checkLayout(t, s, 80, 24)
	// The whole summary: its key help, the last line, is drawn last.
	s = p.WaitFor("the restore's summary", 120*time.Second, func(s string) bool {
		return strings.Contains(s, "Done in") && strings.Contains(s, "Enter/Esc back to home")
	})
	checkLayout(t, s, 80, 24)
	flat := strings.Join(strings.Fields(s), " ")
	if !strings.Contains(flat, hex.EncodeToString(sum[:])+" (matches the one you gave)") || !strings.Contains(flat, "Read back and verified") {
		t.Errorf("summary:\n%s", s)
	}
	// The disk holds the image except for the GPT regions the restore
	// adapted to the bigger disk (the MBR and backup GPT): cmp past the
	// primary GPT up to the image's backup GPT.
	if out, err := exec.Command("cmp", "-i", "17408", "-n", fmt.Sprint(size-17408-33*512), img, filepath.Join(dir, "sdb.img")).CombinedOutput(); err != nil {
		t.Errorf("cmp image disk: %v %s", err, out)
	}
	tbl, err := gpt.ReadFile(filepath.Join(dir, "sdb.img"), 512)
	if err != nil || len(tbl.Problems) > 0 || tbl.Backup == nil || tbl.Backup.HeaderLBA != (2<<30)/512-1 {
		t.Errorf("table after the restore: %v %+v", err, tbl)
	}
}

// TestScreenPlain: with TERM=dumb the program shows the numbered menu,
// with no escape codes at all.
func TestScreenPlain(t *testing.T) {
	bin := build(t)
	dir := screenFixture(t)
	cmd := exec.Command(bin, "-menu", "-disks", "sda.img,sdb.img", "-undo-dir", "undo", "-printk", "printk")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "TERM=dumb")
	cmd.Stdin = strings.NewReader("1\nf\n/dev/sda\nsda.img\n\ns\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"[1] sda.img", "out of place", `You typed "/dev/sda", not sda.img: nothing written.`, "written and verified", "RESCUE: SHELL"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if strings.ContainsRune(s, 0x1b) {
		t.Errorf("escape codes on a dumb terminal:\n%q", s)
	}
	if m, err := esxi.Recognize(mustTable(t, filepath.Join(dir, "sda.img"))); err != nil || m.NeedsMove() {
		t.Errorf("after the plain-menu fix: %v %+v", err, m)
	}
}

func mustTable(t *testing.T, p string) *gpt.Table {
	tb, err := gpt.ReadFile(p, 512)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}
