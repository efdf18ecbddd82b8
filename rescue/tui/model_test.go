package tui

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/rescue/inventory"
)

// fixture makes, in dir, the disks of the tests: sda.img an ESXi 6.0
// disk compacted the way Windows did it (the incident), sdb.img blank,
// sdc.img the healthy original; small.img is an image to restore. It returns the paths (relative to dir,
// so that the screens show the same names in every run).
func fixture(t testing.TB, dir string) []string {
	t.Helper()
	orig := filepath.Join(dir, "sdc.img")
	if err := esxi.Create(orig, esxi.CreateOptions{Version: "6.0", Size: 20 << 30, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if err := esxi.Damage(filepath.Join(dir, "sda.img"), "windows", esxi.DamageOptions{Source: orig}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sdb.img"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "sdb.img"), 2<<30); err != nil {
		t.Fatal(err)
	}
	// small.img: an image to restore (not a disk), small so the tests are quick.
	if err := esxi.Create(filepath.Join(dir, "small.img"), esxi.CreateOptions{Version: "6.0", Size: 1500 << 20, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	return []string{"sda.img", "sdb.img", "sdc.img"}
}

var fixedNow = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// newTestModel returns a model on the fixture's disks, scanned, at 80x24
// without colour, with the undo files going to dir.
func newTestModel(t testing.TB, dir string) *Model {
	t.Helper()
	b := &Backend{Files: fixture(t, dir), Now: func() time.Time { return fixedNow }, KexecAllowed: func() error { return nil },
		UndoSite: func() (*UndoSite, error) {
			return &UndoSite{Dir: "undo", Where: func(n string) string { return "undo/" + n + " (the test's undo directory)" }}, nil
		}}
	os.Mkdir(filepath.Join(dir, "undo"), 0o755)
	m := New(t.Context(), b, "test", false)
	drive(m, m.Init())
	return m
}

// drive runs commands the way bubbletea would (the plain menu's runner).
func drive(m *Model, cmd tea.Cmd) {
	(&plain{m: m, out: io.Discard}).run(cmd)
}

// press sends keys: names such as "enter", "esc", "down", "pgdown", or
// "type:TEXT" for typed text.
func press(m *Model, keys ...string) {
	for _, k := range keys {
		var msg tea.KeyMsg
		switch {
		case strings.HasPrefix(k, "type:"):
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(strings.TrimPrefix(k, "type:"))}
		case k == "enter":
			msg = tea.KeyMsg{Type: tea.KeyEnter}
		case k == "esc":
			msg = tea.KeyMsg{Type: tea.KeyEsc}
		case k == "up":
			msg = tea.KeyMsg{Type: tea.KeyUp}
		case k == "down":
			msg = tea.KeyMsg{Type: tea.KeyDown}
		case k == "tab":
			msg = tea.KeyMsg{Type: tea.KeyTab}
		case k == "pgdown":
			msg = tea.KeyMsg{Type: tea.KeyPgDown}
		default:
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
		}
		_, cmd := m.Update(msg)
		drive(m, cmd)
	}
}

// checkFrame fails when the view is not w x h or has escape codes.
func checkFrame(t *testing.T, view string, w, h int) {
	t.Helper()
	lines := strings.Split(view, "\n")
	if len(lines) != h {
		t.Errorf("%d lines, want %d", len(lines), h)
	}
	for i, l := range lines {
		if n := len([]rune(l)); n > w {
			t.Errorf("line %d is %d columns wide (> %d): %q", i+1, n, w, l)
		}
		if strings.ContainsRune(l, 0x1b) {
			t.Errorf("line %d has an escape code without colour: %q", i+1, l)
		}
	}
}

func TestScreens(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    []string
		want    []string // in the view (whole page: all lines, scrolled or not)
		wantNot []string
		setup   func(m *Model)
		check   func(t *testing.T, dir string, m *Model)
	}{
		{name: "home: verdicts in plain words",
			want: []string{"sda.img 21.0 GiB", "ESXi 6.x boot disk - entries 5,6,7,8,9 out of place: ESXi will not boot", "sdb.img", "blank (no partition table)",
				"sdc.img", "entries in their slots, both GPT copies valid", "[r] Restore", "[u] Back up", "[n] Network", "[e] Boot ESXi", "[s] Shell", "[b] Reboot", "[p] Power off"}},
		{name: "disk: slot table, boot banks and plan",
			keys: []string{"1"},
			want: []string{"[f] Fix it now: the same as gptfix -esxi -yes sda.img", "*   4  Basic Data", "(empty)",
				"Boot banks", "boots, but wrongly: ESXi would boot the older bank", "the loader boots this one", "Plan (gptfix)", "move entries 5,6,7,8,9 from slots 4,5,6,7,8"}},
		{name: "arrows and Enter reach the same disk", keys: []string{"down", "down", "up", "up", "enter"}, want: []string{"[f] Fix it now"}},
		{name: "Esc goes back", keys: []string{"1", "esc"}, want: []string{"[r] Restore"}},
		{name: "fix refused when the typed name is wrong",
			keys: []string{"1", "f", "type:/dev/sda", "enter"},
			want: []string{`You typed "/dev/sda", not sda.img: nothing written.`},
			check: func(t *testing.T, dir string, m *Model) {
				r := Examine(mustDisk(t, "sda.img"))
				if !r.Match.NeedsMove() {
					t.Error("the disk was written after a wrong name")
				}
				if ents, _ := os.ReadDir(filepath.Join(dir, "undo")); len(ents) != 0 {
					t.Errorf("undo files after a refusal: %v", ents)
				}
			}},
		{name: "fix with the typed name writes the real table",
			keys: []string{"1", "f", "type:sda.img", "enter"},
			want: []string{"Done in 0s", "written and verified", "Now: ESXi 6.x boot disk - entries in their slots", "Undo file: undo/gptfix-undo-sda.img-20261201T090000Z.json",
				"gptfix -undo FILE -yes sda.img"},
			check: func(t *testing.T, dir string, m *Model) {
				fixed, _ := gpt.ReadFile("sda.img", 512)
				orig, _ := gpt.ReadFile("sdc.img", 512)
				if d := gpt.Compare(orig, fixed); d.Layout != gpt.LayoutSame || !d.Identical {
					t.Errorf("after the fix: %s", d.Verdict)
				}
				if _, err := os.Stat("undo/gptfix-undo-sda.img-20261201T090000Z.json"); err != nil {
					t.Error(err)
				}
				press(m, "enter")
				if v := m.View(); !strings.Contains(v, "[r] Restore") || strings.Contains(v, "out of place") {
					t.Errorf("home after the fix:\n%s", v)
				}
			}},
		{name: "the healthy disk offers no fix", keys: []string{"3", "f"}, want: []string{"Nothing to fix on sdc.img."}, wantNot: []string{"[f] Fix"}},
		{name: "restore: the wrong name refuses",
			keys: []string{"r", "type:sdc.img", "enter", "1", "type:sdb", "enter"},
			want: []string{`You typed "sdb", not sda.img: nothing written.`}},
		{name: "restore: the source is not offered as a target", keys: []string{"r", "type:sdc.img", "enter"},
			want: []string{"[1] sda.img", "[2] sdb.img"}, wantNot: []string{"[3] sdc.img"}},
		{name: "restore: a bad SHA-256 is refused before anything", keys: []string{"r", "type:sdc.img", "tab", "type:abc", "enter"},
			want: []string{"The SHA-256 must be 64 hex digits"}},
		{name: "restore onto the blank disk, with a wrong SHA-256: fails, the disk stays blank",
			keys: []string{"r", "type:small.img", "tab", "type:" + strings.Repeat("0", 64), "enter", "2", "type:sdb.img", "enter"},
			want: []string{"FAILED", "SHA-256"},
			check: func(t *testing.T, dir string, m *Model) {
				if r := Examine(mustDisk(t, "sdb.img")); !r.Facts.Blank {
					t.Errorf("sdb.img after a failed restore: %s", r.Verdict)
				}
			}},
		{name: "back up: zstd image from the name, manifest passes sha256sum -c, the summary's SHA-256 is the disk's",
			setup: withSmallDisk, keys: []string{"u", "4", "type:out/backup.img.zst", "enter"},
			want: []string{"Done in", "small.img -> out/backup.img.zst", "compression: zstd", "Read back and verified.", "Checksums:"},
			check: func(t *testing.T, dir string, m *Model) {
				sum := sha256File(t, "small.img")
				if !strings.Contains(pageText(m), "SHA-256 "+sum) {
					t.Errorf("the summary lacks the disk's SHA-256 %s:\n%s", sum, pageText(m))
				}
				sh(t, ".", "zstd -dc out/backup.img.zst | cmp - small.img")
				sh(t, "out", "sha256sum -c backup.img.zst.sha256")
				if b, _ := os.ReadFile("out/backup.img.zst.sha256"); !strings.Contains(string(b), sum) {
					t.Errorf("the manifest lacks the uncompressed SHA-256 %s:\n%s", sum, b)
				}
			}},
		{name: "back up: an existing image is not overwritten",
			setup: func(m *Model) {
				withSmallDisk(m)
				if err := os.WriteFile("out/backup.img.zst", []byte("keep me"), 0o644); err != nil {
					panic(err)
				}
			},
			keys: []string{"u", "4", "type:out/backup.img.zst", "enter"},
			want: []string{"out/backup.img.zst exists (7 B): nothing written; give another name."}, wantNot: []string{"Done in"},
			check: func(t *testing.T, dir string, m *Model) {
				if b, _ := os.ReadFile("out/backup.img.zst"); string(b) != "keep me" {
					t.Errorf("the existing image was changed: now %d bytes", len(b))
				}
				if ents := names(t, "out"); len(ents) != 1 {
					t.Errorf("files left beside it: %v", ents)
				}
			}},
		{name: "back up: an unwritable destination fails clearly, nothing left behind",
			setup: func(m *Model) {
				withSmallDisk(m)
				if err := os.WriteFile("out/file", nil, 0o644); err != nil {
					panic(err)
				}
			},
			keys: []string{"u", "4", "type:out/file/backup.img.zst", "enter"},
			want: []string{"FAILED", "out/file", "not a directory"},
			check: func(t *testing.T, dir string, m *Model) {
				if ents := names(t, "out"); len(ents) != 1 {
					t.Errorf("files left behind: %v", ents)
				}
			}},
		{name: "network without NICs", keys: []string{"n"}, want: []string{"No network interface found"}},
		{name: "reboot asks first", keys: []string{"b"}, want: []string{"Reboot now?"},
			check: func(t *testing.T, dir string, m *Model) {
				press(m, "n")
				if m.done {
					t.Error("n ended the screen")
				}
				press(m, "b", "y")
				if !m.done || m.Result().Action != ActReboot {
					t.Errorf("result %+v", m.Result())
				}
			}},
		{name: "shell ends the screen", keys: []string{"s"}, check: func(t *testing.T, dir string, m *Model) {
			if m.Result().Action != ActShell {
				t.Errorf("result %+v", m.Result())
			}
		}},
		{name: "boot refused with the reason under Secure Boot", keys: []string{"e"},
			setup: func(m *Model) {
				m.b.KexecAllowed = func() error { return errors.New("the kernel is locked down (integrity, Secure Boot is on)") }
			},
			want: []string{"Booting ESXi from here is not possible:", "the kernel is locked down (integrity, Secure Boot is on)"}, wantNot: []string{"[1] sda.img"},
			check: func(t *testing.T, dir string, m *Model) {
				press(m, "1", "y")
				if m.done {
					t.Errorf("the screen ended: %+v", m.Result())
				}
			}},
		{name: "boot offers the ESXi disks", keys: []string{"e"}, want: []string{"[1] sda.img", "[2] sdc.img"}, wantNot: []string{"sdb.img"},
			check: func(t *testing.T, dir string, m *Model) {
				press(m, "2", "y")
				if r := m.Result(); r.Action != ActBoot || r.Disk != "sdc.img" {
					t.Errorf("result %+v", r)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			m := newTestModel(t, dir)
			if tc.setup != nil {
				tc.setup(m)
			}
			press(m, tc.keys...)
			checkPage(t, m, tc.want, tc.wantNot)
			if tc.check != nil {
				tc.check(t, dir, m)
			}
		})
	}
}

func mustDisk(t *testing.T, p string) inventory.Disk {
	d, err := FileDisk(p)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pageText is the current screen's whole page (all lines, scrolled or
// not) and its flash line; "" once the screen has ended.
func pageText(m *Model) string {
	var page strings.Builder
	if !m.done {
		lines, _ := m.top().body(m)
		for _, l := range lines {
			page.WriteString(l.text + "\n")
		}
		page.WriteString(m.flash)
	}
	return page.String()
}

// checkPage checks the frame (80x24, no escape codes) and that the page
// has each of want (spaces and line breaks folded) and none of wantNot.
func checkPage(t *testing.T, m *Model, want, wantNot []string) {
	t.Helper()
	if !m.done {
		checkFrame(t, m.View(), 80, 24)
	}
	page := pageText(m)
	flat := strings.Join(strings.Fields(page), " ")
	for _, w := range want {
		if !strings.Contains(flat, strings.Join(strings.Fields(w), " ")) {
			t.Errorf("page lacks %q:\n%s", w, page)
		}
	}
	for _, w := range wantNot {
		if strings.Contains(page, w) {
			t.Errorf("page has %q:\n%s", w, page)
		}
	}
}

// withSmallDisk adds the fixture's small.img as a fourth disk (quick to
// back up) and an empty directory out/ for the images.
func withSmallDisk(m *Model) {
	if err := os.Mkdir("out", 0o755); err != nil {
		panic(err)
	}
	m.b.Files = append(m.b.Files, "small.img")
	drive(m, m.scan())
}

// sh runs a shell pipeline of stock tools in dir and fails with its output.
func sh(t *testing.T, dir, script string) {
	t.Helper()
	c := exec.Command("sh", "-ec", script)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		t.Errorf("%s: %v\n%s", script, err, out)
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestCopyBeforeScan: Restore and Back up chosen while the disks are
// still being examined (a key pressed right after the start) say so,
// and list the disks when the scan is back instead of "no disk can be
// offered" for the rest of the flow.
func TestCopyBeforeScan(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	b := &Backend{Files: fixture(t, dir), Now: func() time.Time { return fixedNow }, KexecAllowed: func() error { return nil }}
	for _, keys := range [][]string{{"r", "type:sdc.img", "enter"}, {"u"}} {
		m := New(t.Context(), b, "test", false)
		scan := m.Init() // not run yet: the disks are being examined
		press(m, keys...)
		checkPage(t, m, []string{"Examining the disks..."}, []string{"[1] sda.img", "no disk can be offered"})
		drive(m, scan)
		checkPage(t, m, []string{"[1] sda.img", "[2] sdb.img"}, []string{"Examining the disks...", "no disk can be offered"})
		press(m, "2")
		if keys[0] == "r" {
			checkPage(t, m, []string{"type the device name (sdb.img)"}, nil)
		} else {
			checkPage(t, m, []string{"Backing up sdb.img"}, nil)
		}
	}
}
