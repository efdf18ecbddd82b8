package qemutests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/davtest"
)

// stickPart is the mtools image spec of the stick's FAT partition.
func stickPart(t *testing.T, stick string) string {
	t.Helper()
	parts, err := Sfdisk(stick)
	if err != nil || len(parts) == 0 {
		t.Fatalf("sfdisk %s: %v %v", stick, parts, err)
	}
	return fmt.Sprintf("%s@@%d", stick, parts[0].Start*512)
}

// stickFiles copies every file of the stick's FAT partition out with
// mtools (mcopy -s) into a new directory and returns it.
func stickFiles(t *testing.T, stick, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	os.MkdirAll(dir, 0o755)
	if out, err := exec.Command("mcopy", "-s", "-n", "-i", stickPart(t, stick), "::/", dir).CombinedOutput(); err != nil {
		t.Fatalf("mcopy -s from the stick: %v: %s", err, out)
	}
	return dir
}

// checkKept checks what the run left on the stick (issue 14 "nothing
// lost"): one run directory under /rescue-logs with the undo file, the
// console log and the report, named <host>-<UTC time>; fsck.fat clean; every other file as before;
// and gptfix -undo of the undo file and of the report each turn a copy of
// the fixed disk back into the damaged one, byte for byte.
func checkKept(t *testing.T, tl *Tools, stick, before, fixed, damaged, host string) {
	t.Helper()
	after := stickFiles(t, stick, "after")
	runs, _ := filepath.Glob(filepath.Join(after, "rescue-logs", "*"))
	if len(runs) != 1 {
		t.Fatalf("want one run directory in the stick's /rescue-logs, found %v", runs)
	}
	run := runs[0]
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(host) + `-\d{8}T\d{6}Z$`).MatchString(filepath.Base(run)) {
		t.Errorf("run directory %q is not %s-<UTC time>", filepath.Base(run), host)
	}
	undos, _ := filepath.Glob(filepath.Join(run, "undo-vda-*.json"))
	for _, f := range []string{"report.json", "console.log"} {
		if _, err := os.Stat(filepath.Join(run, f)); err != nil {
			t.Errorf("the stick lacks %s: %v", f, err)
		}
	}
	if len(undos) != 1 {
		t.Fatalf("want one undo file for vda on the stick, found %v", undos)
	}
	logText, _ := os.ReadFile(filepath.Join(run, "console.log"))
	if !strings.Contains(string(logText), "RESCUE: STEP fix ok") {
		t.Errorf("the stick's console.log lacks the fix step:\n%.2000s", logText)
	}
	// The rest of the stick is as it was: diff -r without rescue-logs.
	if out, err := exec.Command("diff", "-r", "-x", "rescue-logs", before, after).CombinedOutput(); err != nil {
		t.Errorf("the rescue changed files on its stick outside /rescue-logs: %v\n%s", err, out)
	}
	// fsck.fat on the partition (copied out: fsck.fat has no offset option).
	parts, _ := Sfdisk(stick)
	part := filepath.Join(t.TempDir(), "esp.img")
	if out, err := exec.Command("dd", "if="+stick, "of="+part, "bs=512", fmt.Sprint("skip=", parts[0].Start),
		fmt.Sprint("count=", parts[0].Size), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	if out, err := exec.Command("fsck.fat", "-n", part).CombinedOutput(); err != nil {
		t.Errorf("fsck.fat -n on the stick after the run: %v\n%s", err, out)
	}
	// gptfix -undo of each kept file reverts the fix exactly.
	for _, f := range []string{undos[0], filepath.Join(run, "report.json")} {
		work := filepath.Join(t.TempDir(), "work.img")
		if err := CopySparse(fixed, work); err != nil {
			t.Fatal(err)
		}
		if out, err := tl.Run("gptfix", "-undo", f, "-yes", work); err != nil {
			t.Errorf("gptfix -undo %s: %v\n%s", filepath.Base(f), err, out)
			continue
		}
		if out, err := exec.Command("cmp", damaged, work).CombinedOutput(); err != nil {
			t.Errorf("gptfix -undo %s did not restore the damaged disk byte for byte: %s", filepath.Base(f), out)
		}
	}
}

// TestJobPXE is issue 14's "jobs that run once": network boot (SeaBIOS +
// iPXE, QEMU's TFTP serving out/pxe/ with boot.ipxe's job-base line set)
// against a real WebDAV server (nginx's dav module on a loopback port,
// reached through guestfwd). First boot: iPXE finds the job for the NIC's
// MAC, the rescue fetches it (hands-off fix, rescue.done=reboot), fixes the
// disk and DELETEs the job. Second boot: no job, and boot.ipxe goes to the
// local-boot fallback instead of starting the rescue.
func TestJobPXE(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	ipxe, err := os.ReadFile(filepath.Join(a.PXEDir, "boot.ipxe"))
	if err != nil {
		t.Fatalf("%v: run ./build.sh first", err)
	}
	reJobBase := regexp.MustCompile(`(?m)^#set job-base .*$`)
	if !reJobBase.Match(ipxe) {
		t.Fatalf("out/pxe/boot.ipxe has no `#set job-base ...` line to enable jobs with:\n%s", ipxe)
	}
	t.Parallel()
	dav := davtest.Start(t, t.TempDir())
	const mac = "52-54-00-12-34-56" // QEMU's default MAC of the first NIC
	job := "# written by TestJobPXE\nrescue.action=fix rescue.ref=esxi rescue.target=auto\nrescue.done=reboot\n"
	if err := os.MkdirAll(filepath.Join(dav.Root, "jobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dav.Root, "jobs", mac), []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	tftp := t.TempDir()
	script := reJobBase.ReplaceAllString(string(ipxe), "set job-base http://10.0.2.100/jobs")
	script, err = handsOffIPXE(script, []string{"panic=-1"}) // the base stays the interactive default
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tftp, "boot.ipxe"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(a.PXEDir)
	for _, e := range ents {
		if e.Name() != "boot.ipxe" {
			os.Symlink(filepath.Join(a.PXEDir, e.Name()), filepath.Join(tftp, e.Name()))
		}
	}
	b, before := brokenIncident(t, tl)
	vm := VM{
		Name:  t.Name(),
		Boot:  "n",
		Disks: []Disk{{Path: b.Damaged}},
		Net:   &Net{TFTPDir: tftp, BootFile: "boot.ipxe", Forwards: map[string]string{"10.0.2.100:80": dav.Addr}},
	}
	r, _ := handsOff(t, vm, nil)
	if !strings.Contains(r.Output(), "RESCUE: JOB DONE http://10.0.2.100/jobs/"+mac) {
		t.Errorf("the rescue did not report the job done")
	}
	checkFixed(t, b, before)
	if _, err := os.Stat(filepath.Join(dav.Root, "jobs", mac)); !os.IsNotExist(err) {
		t.Errorf("the job file is still on the WebDAV server after the run: %v", err)
	}
	for _, want := range []string{"GET /jobs/" + mac + " 200", "DELETE /jobs/" + mac + " 204"} {
		if !dav.HasRequest(want) {
			t.Errorf("nginx's access log lacks %q: %q", want, dav.Requests())
		}
	}
	// Second boot: no job; iPXE must not start the rescue.
	vm.Name = t.Name() + "-second"
	vm.Timeout = Scaled(2 * time.Minute)
	r2 := boot(t, "second", vm)
	reLocal := regexp.MustCompile(`no job for ` + mac + `: booting from the local disk`)
	if _, err := r2.Expect(reLocal, 0, regexp.MustCompile(`loading kernel`)); err != nil {
		t.Fatalf("second boot: %v", err)
	}
	r2.Kill()
	if !dav.HasRequest("GET /jobs/" + mac + " 404") {
		t.Errorf("nginx's access log lacks the second boot's 404: %q", dav.Requests())
	}
}
