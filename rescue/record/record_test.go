package record

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/davtest"
	"github.com/esxi-rescue/rescue/internal/schematest"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/console"
	"github.com/esxi-rescue/rescue/rescue/flow"
	"github.com/esxi-rescue/rescue/rescue/keep"
	"github.com/esxi-rescue/rescue/rescue/report"
	"github.com/esxi-rescue/rescue/rescue/system"
)

func undoDoc(t *testing.T) []byte {
	old := make([]byte, 512)
	sum := sha256.Sum256(old)
	b, err := gpt.MarshalUndo(&gpt.Undo{Device: "/dev/vda", DiskSize: 1 << 20, SectorSize: 512, Records: []gpt.UndoRecord{{
		Region: "primary header", LBA: 1, Offset: 512, Old: hex.EncodeToString(old), New: hex.EncodeToString(bytes.Repeat([]byte{1}, 512)),
		OldSHA256: hex.EncodeToString(sum[:])}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ext2Stick stands in for the stick's FAT partition (this host's kernel
// has no vfat; keep's tests say more) on a loop device.
func ext2Stick(t *testing.T) (*keep.Stick, string) {
	if os.Getuid() != 0 {
		t.Skip("needs root (loop device, mount)")
	}
	img := filepath.Join(t.TempDir(), "stick.img")
	for _, c := range [][]string{{"truncate", "-s", "16M", img}, {"mkfs.ext2", "-q", "-F", img}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Skipf("%v: %v %s", c, err, out)
		}
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	s, err := keep.New(keep.Options{Device: loop, HostID: "SN1", Time: time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC), FSType: "ext2"})
	if err != nil {
		t.Fatal(err)
	}
	return s, img
}

type collector struct {
	mu   sync.Mutex
	docs [][]byte
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.docs = append(c.docs, b)
	c.mu.Unlock()
}

// TestFinish: a successful job run ends with the job DELETEd on a real
// WebDAV server, report.json (undo file inside) and console.log on the
// stick, and the final report POSTed, valid against the schema.
func TestFinish(t *testing.T) {
	stick, img := ext2Stick(t)
	dav := davtest.Start(t, t.TempDir())
	os.MkdirAll(filepath.Join(dav.Root, "jobs"), 0o755)
	os.WriteFile(filepath.Join(dav.Root, "jobs", "52-54-00-12-34-56"), []byte("rescue.action=fix rescue.target=auto\n"), 0o644)
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()

	var conOut bytes.Buffer
	con := console.New(&conOut)
	rep := report.New("test")
	rec := Start(con, rep, t.TempDir())
	rec.Stick, rec.StatusInterval = stick, 100*time.Millisecond
	cfg, err := cmdline.Parse(cmdline.Split("rescue.action=fix rescue.target=auto rescue.report="+srv.URL+"/status", "test", false))
	if err != nil {
		t.Fatal(err)
	}
	rec.Observe("fix", 1, 1, cfg)
	con.Printf("fix: a console line")
	time.Sleep(300 * time.Millisecond)
	jobURL := dav.URL + "/jobs/52-54-00-12-34-56"
	out := flow.Outcome{Config: cfg, Job: &flow.JobInfo{URL: jobURL, Found: true, Raw: jobURL}}
	if err := rec.Finish(context.Background(), out, []system.UndoFile{{Step: "fix", Device: "/dev/vda", File: stick.Where("undo-vda.json"), Data: undoDoc(t)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dav.Root, "jobs", "52-54-00-12-34-56")); !os.IsNotExist(err) {
		t.Errorf("job not deleted: %v", err)
	}
	if !strings.Contains(conOut.String(), "RESCUE: JOB DONE") {
		t.Errorf("console lacks the JOB DONE marker")
	}
	// On the stick (read back with debugfs, not through our code).
	saved, err := exec.Command("debugfs", "-R", "cat /rescue-logs/SN1-20261201T093000Z/report.json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	schematest.Valid(t, "report-1.schema.json", saved)
	if u, _, err := report.ExtractUndo(saved, "/dev/vda"); err != nil || len(u.Records) != 1 {
		t.Errorf("undo from the stick's report: %v", err)
	}
	logText, _ := exec.Command("debugfs", "-R", "cat /rescue-logs/SN1-20261201T093000Z/console.log", img).Output()
	if !strings.Contains(string(logText), "fix: a console line") {
		t.Errorf("console.log on the stick: %q", logText)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	final := col.docs[len(col.docs)-1]
	schematest.Valid(t, "report-1.schema.json", final)
	if !bytes.Contains(final, []byte(`"done": true`)) || !bytes.Contains(final, []byte(`"progress_sent"`)) || len(col.docs) < 3 {
		t.Errorf("%d documents; final report:\n%.1500s", len(col.docs), final)
	}
}

// TestFinishJobNotDeleted: a job the server refuses to delete makes the
// run fail (it would run again at the next boot), said in the report.
func TestFinishJobNotDeleted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "read-only share", http.StatusForbidden)
	}))
	defer srv.Close()
	con := console.New(io.Discard)
	rep := report.New("test")
	rec := Start(con, rep, t.TempDir())
	cfg, _ := cmdline.Parse(nil)
	err := rec.Finish(context.Background(), flow.Outcome{Config: cfg, Job: &flow.JobInfo{URL: srv.URL, Found: true, Raw: srv.URL}}, nil)
	if err == nil || !strings.Contains(err.Error(), "403") || rep.Result != "failed" {
		t.Errorf("Finish = %v, result %q", err, rep.Result)
	}
}
