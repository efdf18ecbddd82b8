package qemutests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/davtest"
)

// TestJobGRUB is the GRUB half of issue 14's "the iPXE/GRUB configs fall
// back to local boot when there is no job": UEFI network boot (OVMF, the
// NIC first and the disk second in the boot order) of GRUB's netboot image
// from out/pxe/ (QEMU's TFTP), with the shipped boot/grub/grub.cfg's job
// lines enabled, against nginx's WebDAV module on a loopback port (through
// guestfwd) serving the jobs directory of the TFTP root. Two machines at once:
//   - with a job: GRUB's http module finds it, the rescue kernel boots with
//     rescue.job=, runs the job (verify, rescue.done=poweroff) and DELETEs it;
//   - without one (TFTP: file not found): GRUB finds the local ESXi disk by
//     its /EFI/VMware/mboot64.efi and chainloads its /EFI/BOOT/BOOTX64.EFI,
//     here a tiny GRUB (grub-mkstandalone) that prints a marker and powers
//     off; no HTTP request reaches the job server.
func TestJobGRUB(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	const ovmf = "/usr/share/ovmf/OVMF.fd"
	for _, f := range []string{ovmf, filepath.Join(a.PXEDir, "boot/grub/x86_64-efi/core.efi")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v: run ./build.sh first (packages ovmf, grub-efi-amd64-bin)", err)
		}
	}
	for _, c := range []string{"grub-mkstandalone", "mcopy"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s: %v (./build.sh deps)", c, err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(a.PXEDir, "boot/grub/grub.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	t.Parallel()

	const mac = "52-54-00-12-34-56" // QEMU's default MAC of the first NIC
	job := "# written by TestJobGRUB\nrescue.action=verify rescue.target=auto rescue.done=poweroff\n"

	// The local disk: an ESXi 5.0 layout whose system partition (slot 1,
	// LBA 64, FAT16; esximg puts placeholders of ESXi's loaders there, among
	// them /EFI/VMware/mboot64.efi) gets a real EFI program as
	// /EFI/BOOT/BOOTX64.EFI.
	dir := t.TempDir()
	img, err := MakeImage(tl, filepath.Join(dir, "esxi.img"), "5.0", "6G", 512, "")
	if err != nil {
		t.Fatal(err)
	}
	loader := localLoader(t, dir, "LOCAL-DISK-LOADER: booted from the local disk")
	if out, err := exec.Command("mcopy", "-o", "-i", img.Path+"@@32768", loader, "::EFI/BOOT/BOOTX64.EFI").CombinedOutput(); err != nil {
		t.Fatalf("mcopy of the local loader onto the ESP: %v: %s", err, out)
	}

	// One TFTP root per machine, with its jobs directory (rescue-jobs/)
	// served over HTTP by its own nginx: GRUB looks for the job over TFTP,
	// the rescue fetches and DELETEs it over WebDAV.
	type machine struct {
		name, disk string
		withJob    bool
		tftp       string
		dav        *davtest.Server
	}
	ms := []*machine{{name: "job", disk: img.Path, withJob: true}, {name: "nojob", disk: filepath.Join(dir, "esxi-2.img")}}
	if err := CopySparse(img.Path, ms[1].disk); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		m.tftp = grubTFTP(t, a.PXEDir, enableGRUBJobs(t, string(cfg), "http://10.0.2.100/rescue-jobs", "/rescue-jobs"))
		jobs := filepath.Join(m.tftp, "rescue-jobs")
		if err := os.MkdirAll(jobs, 0o755); err != nil {
			t.Fatal(err)
		}
		if m.withJob {
			if err := os.WriteFile(filepath.Join(jobs, mac), []byte(job), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		m.dav = davtest.Start(t, m.tftp)
	}
	start := func(m *machine) *Running {
		return boot(t, m.name, VM{
			BIOS:    ovmf,
			Timeout: Scaled(4 * time.Minute),
			Disks:   []Disk{{Path: m.disk, BootIndex: 2}},
			Net: &Net{TFTPDir: m.tftp, BootFile: "boot/grub/x86_64-efi/core.efi", BootIndex: 1,
				Forwards: map[string]string{"10.0.2.100:80": m.dav.Addr}},
		})
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { // with a job: the rescue runs it and deletes it
		defer wg.Done()
		r := start(ms[0])
		steps := []struct {
			want *regexp.Regexp
			fail []*regexp.Regexp
		}{
			{regexp.MustCompile(`ESXi rescue: job found: starting the rescue system`), []*regexp.Regexp{regexp.MustCompile(`no job for`)}},
			{regexp.MustCompile(`Command line:.*rescue\.job=http://10\.0\.2\.100/rescue-jobs/` + mac), nil},
			{regexp.MustCompile(`RESCUE: JOB DONE http://10\.0\.2\.100/rescue-jobs/` + mac), []*regexp.Regexp{MarkFailed}},
			{MarkDone, []*regexp.Regexp{MarkFailed}},
		}
		for _, s := range steps {
			if _, err := r.Expect(s.want, 0, s.fail...); err != nil {
				errs[0] = fmt.Errorf("with a job: %w", err)
				return
			}
		}
		if err := r.Wait(Scaled(time.Minute)); err != nil {
			errs[0] = fmt.Errorf("with a job: rescue.done=poweroff: %w", err)
		}
	}()
	go func() { // without one: GRUB exits, the firmware boots the disk
		defer wg.Done()
		r := start(ms[1])
		for _, want := range []string{`no job for ` + mac + `: booting from the local disk`,
			`chainloading \(hd0,gpt1\)/EFI/BOOT/BOOTX64.EFI`, `LOCAL-DISK-LOADER: booted from the local disk`} {
			if _, err := r.Expect(regexp.MustCompile(want), Scaled(2*time.Minute), regexp.MustCompile(`Loading kernel and initramfs|job found|back to the firmware`)); err != nil {
				errs[1] = fmt.Errorf("without a job: %w", err)
				return
			}
		}
		if err := r.Wait(Scaled(30 * time.Second)); err != nil { // the local loader's halt
			errs[1] = fmt.Errorf("without a job: the local loader did not power off: %w", err)
		}
	}()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(ms[0].tftp, "rescue-jobs", mac)); !os.IsNotExist(err) {
		t.Errorf("the job is still on the WebDAV server after the run: %v", err)
	}
	for _, want := range []string{"GET /rescue-jobs/" + mac + " 200", "DELETE /rescue-jobs/" + mac + " 204"} {
		if !ms[0].dav.HasRequest(want) {
			t.Errorf("with a job: nginx's access log lacks %q: %q", want, ms[0].dav.Requests())
		}
	}
	for _, r := range ms[1].dav.Requests() {
		if strings.Contains(r, "/rescue-jobs/") {
			t.Errorf("without a job, the rescue must not have started, but nginx saw %q", r)
		}
	}
}

// enableGRUBJobs uncomments the job lines of the shipped GRUB netboot
// configuration (failing when they are not there).
func enableGRUBJobs(t *testing.T, cfg, url, tftpDir string) string {
	t.Helper()
	for _, l := range []struct{ re, to string }{
		{`(?m)^#set job_url=.*$`, "set job_url=" + url},
		{`(?m)^#set job_tftp=.*$`, "set job_tftp=" + tftpDir},
	} {
		re := regexp.MustCompile(l.re)
		if !re.MatchString(cfg) {
			t.Fatalf("out/pxe/boot/grub/grub.cfg has no line matching %s to enable jobs with:\n%s", l.re, cfg)
		}
		cfg = re.ReplaceAllString(cfg, l.to)
	}
	return cfg
}

// grubTFTP makes a TFTP root for one VM: the PXE tree (symbolic links)
// with its own boot/grub/grub.cfg.
func grubTFTP(t *testing.T, pxe, cfg string) string {
	t.Helper()
	root := t.TempDir()
	link := func(from, to string) {
		ents, err := os.ReadDir(from)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name() == "boot" || (to != root && e.Name() == "grub.cfg") {
				continue
			}
			if err := os.Symlink(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	link(pxe, root)
	grub := filepath.Join(root, "boot", "grub")
	if err := os.MkdirAll(grub, 0o755); err != nil {
		t.Fatal(err)
	}
	link(filepath.Join(pxe, "boot", "grub"), grub)
	if err := os.WriteFile(filepath.Join(grub, "grub.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// localLoader builds a small EFI program (GRUB, grub-mkstandalone) that
// prints marker and powers the machine off: the "local disk" boot loader.
func localLoader(t *testing.T, dir, marker string) string {
	t.Helper()
	cfg := filepath.Join(dir, "local-grub.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("echo %q\nhalt\n", marker)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "local.efi")
	cmd := exec.Command("grub-mkstandalone", "-O", "x86_64-efi", "-o", out, "--install-modules=normal echo halt",
		"--locales=", "--fonts=", "--themes=", "boot/grub/grub.cfg="+cfg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("grub-mkstandalone: %v: %s", err, strings.TrimSpace(string(b)))
	}
	return out
}
