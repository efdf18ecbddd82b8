package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	rescuereport "github.com/esxi-rescue/rescue/rescue/report"
)

// TestUndoFromReport: a rescue report holding the fix's undo file (as the
// rescue writes it to the stick) is accepted by -undo, and the damaged
// disk's table copies come back byte for byte (cmp of the first and the
// last MiB).
func TestUndoFromReport(t *testing.T) {
	dir := t.TempDir()
	in := newIncident(t, dir, "5.0", 8*gib, 12*gib)
	damaged := filepath.Join(dir, "damaged.img")
	cp(t, in.broken, damaged)
	undoDir := t.TempDir()
	if code, out, errOut := gptfix(t, "-esxi", "-yes", "-undo-dir", undoDir, in.broken); code != 0 {
		t.Fatalf("fix: exit %d\n%s%s", code, out, errOut)
	}
	undos, _ := filepath.Glob(filepath.Join(undoDir, "*.json"))
	if len(undos) != 1 {
		t.Fatalf("undo files: %v", undos)
	}
	doc, err := os.ReadFile(undos[0])
	if err != nil {
		t.Fatal(err)
	}
	rep := rescuereport.New("test")
	rep.Run = "SN1-20261201T093000Z"
	if err := rep.AddUndo("fix", "/dev/vda", "/dev/sdb1:/rescue-logs/SN1-20261201T093000Z/undo-vda.json", doc); err != nil {
		t.Fatal(err)
	}
	rep.Log = "console lines\n"
	rep.Finish(nil)
	rp := filepath.Join(dir, "report.json")
	if err := os.WriteFile(rp, rep.JSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	// Without -yes: shown, nothing written; then with -yes.
	if code, out, _ := gptfix(t, "-undo", rp, in.broken); code != 1 || !strings.Contains(out, "made for /dev/vda") {
		t.Errorf("-undo REPORT without -yes: exit %d\n%s", code, out)
	}
	if code, out, errOut := gptfix(t, "-undo", rp, "-yes", in.broken); code != 0 {
		t.Fatalf("-undo REPORT -yes: exit %d\n%s%s", code, out, errOut)
	}
	// Both table copies, with cmp: the first and the last MiB (a whole
	// cmp reads 24 GiB of holes; the undo writes only GPT regions).
	const mib = 1 << 20
	gpttest.Run(t, "cmp", "-n", "1048576", damaged, in.broken)
	tail := strconv.FormatInt(12*gib-mib, 10)
	gpttest.Run(t, "cmp", "-i", tail+":"+tail, damaged, in.broken)
	// A report without undo files: a clear error, exit 2.
	empty := rescuereport.New("test")
	ep := filepath.Join(dir, "empty.json")
	os.WriteFile(ep, empty.JSON(), 0o644)
	if code, _, errOut := gptfix(t, "-undo", ep, "-yes", in.broken); code != 2 || !strings.Contains(errOut, "holds no undo file") {
		t.Errorf("-undo of a report without undo files: exit %d %s", code, errOut)
	}
}
