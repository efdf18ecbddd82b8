package report

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/schematest"
)

// undoDoc makes a real undo file (gpt.MarshalUndo) of one sector at lba.
func undoDoc(t testing.TB, device string, lba uint64) []byte {
	old, nw := make([]byte, 512), bytes.Repeat([]byte{byte(lba)}, 512)
	sum := sha256.Sum256(old)
	b, err := gpt.MarshalUndo(&gpt.Undo{Device: device, DiskSize: 1 << 20, SectorSize: 512, Records: []gpt.UndoRecord{{
		Region: "test", LBA: lba, Offset: int64(lba) * 512, Old: hex.EncodeToString(old), New: hex.EncodeToString(nw),
		OldSHA256: hex.EncodeToString(sum[:])}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtractUndo(t *testing.T) {
	r := New("test")
	r.Run = "SN1-20261201T093000Z"
	if err := r.AddUndo("restore", "/dev/vda", "/tmp/a", undoDoc(t, "/dev/vda", 2)); err != nil {
		t.Fatal(err)
	}
	if err := r.AddUndo("fix", "/dev/vda", "/dev/sdb1:/rescue-logs/x/undo.json", undoDoc(t, "/dev/vda", 3)); err != nil {
		t.Fatal(err)
	}
	if err := r.AddUndo("fix", "/dev/vdb", "b", undoDoc(t, "/dev/vdb", 4)); err != nil {
		t.Fatal(err)
	}
	r.Log = "a console line\n"
	r.Finish(nil)
	data := r.JSON()
	if !IsReport(data) || IsReport(undoDoc(t, "x", 1)) {
		t.Fatal("IsReport wrong")
	}
	for _, c := range []struct {
		dev  string
		lba  uint64
		note string
		err  string
	}{
		{"/dev/vda", 3, "newest", ""},
		{"vdb", 4, "", ""},
		{"/dev/sdc", 0, "", "none for /dev/sdc"},
	} {
		u, note, err := ExtractUndo(data, c.dev)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.dev, err, c.err)
			}
			continue
		}
		if err != nil || u.Records[0].LBA != c.lba || !strings.Contains(note, c.note) {
			t.Errorf("%s: %v %q %v", c.dev, u, note, err)
		}
	}
	// The console copy leaves the log out; the report keeps it.
	if strings.Contains(string(r.ConsoleJSON()), "a console line") || !strings.Contains(string(data), "a console line") {
		t.Error("ConsoleJSON/JSON log handling wrong")
	}
}

func TestExtractUndoErrors(t *testing.T) {
	one := New("t")
	one.AddUndo("fix", "/dev/vda", "f", undoDoc(t, "/dev/vda", 2))
	if u, note, err := ExtractUndo(one.JSON(), "/dev/sdx"); err != nil || u == nil || !strings.Contains(note, "made for /dev/vda") {
		t.Errorf("single undo file, other name: %v %q %v", u, note, err)
	}
	damaged := bytes.Replace(one.JSON(), []byte(`"region": "test"`), []byte(`"region": "tesT"`), 1)
	if bytes.Equal(damaged, one.JSON()) {
		t.Fatal("test did not damage the document")
	}
	if _, _, err := ExtractUndo(damaged, "/dev/vda"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged undo document: %v", err)
	}
	none := New("t")
	if _, _, err := ExtractUndo(none.JSON(), "/dev/vda"); err == nil || !strings.Contains(err.Error(), "no undo file") {
		t.Errorf("no undo: %v", err)
	}
	if _, _, err := ExtractUndo([]byte(`{"schema":"esxi-rescue-report/9"}`), "x"); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Errorf("other schema: %v", err)
	}
	if err := none.AddUndo("fix", "x", "f", []byte("not json")); err == nil {
		t.Error("AddUndo took non-JSON")
	}
}

func FuzzExtractUndo(f *testing.F) {
	r := New("t")
	r.AddUndo("fix", "/dev/vda", "f", undoDoc(f, "/dev/vda", 2))
	f.Add(r.JSON(), "/dev/vda")
	f.Add([]byte(`{"schema":"esxi-rescue-report/1","undo":[{"device":"a","document":{}}]}`), "a")
	f.Fuzz(func(t *testing.T, data []byte, dev string) {
		u, _, err := ExtractUndo(data, dev)
		if err == nil && (u == nil || (u.SectorSize != 512 && u.SectorSize != 4096)) {
			t.Fatalf("accepted %v", u)
		}
	})
}

// TestSchema: reports validate against docs/schema/report-1.schema.json,
// and the schema rejects what it must.
func TestSchema(t *testing.T) {
	s := schematest.Compile(t, "report-1.schema.json")
	r := New("test")
	r.Run, r.Host = "SN1-20261201T093000Z", Host{ID: "SN1", MACs: []string{"52:54:00:12:34:56"}}
	r.Steps = append(r.Steps, Step{Name: "fix", Status: "ok", Seconds: 1})
	r.AddUndo("fix", "/dev/vda", "/dev/sdb1:/rescue-logs/x/undo-vda.json", undoDoc(t, "/dev/vda", 2))
	r.Posts = &Posts{ProgressSent: 3}
	r.Finish(nil)
	if err := schematest.Check(s, r.JSON()); err != nil {
		t.Errorf("a report is not valid: %v\n%s", err, r.JSON())
	}
	r.Finish(errors.New("fix: boom"))
	if err := schematest.Check(s, r.ConsoleJSON()); err != nil {
		t.Errorf("a failed report is not valid: %v", err)
	}
	for _, bad := range []string{
		`{"schema":"esxi-rescue-report/2"}`,
		strings.Replace(string(r.JSON()), `"result": "failed"`, `"result": "maybe"`, 1),
		strings.Replace(string(r.JSON()), `"format": "gptfix-undo/1"`, `"format": "other"`, 1),
	} {
		if schematest.Check(s, []byte(bad)) == nil {
			t.Errorf("the schema accepts %.200s", bad)
		}
	}
}
