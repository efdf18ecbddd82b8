package qemutests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/remotetest"
)

// TestRestoreShare is the hands-off restore,fix,verify of TestRestoreHTTP
// from an SMB share (smbd), an NFSv3 export (go-nfs, through the guest
// kernel's NFS client) and an S3 bucket (versitygw), servers on loopback
// reached through guestfwd (restrict=on). The image is the small
// ESXi-style one (makeSmallRestoreImage): the protocols are under test
// here, not the decompression of a 1 GiB stream in a TCG guest. The
// credentials come from rescue.cred=, an http:// URL on the test's own
// server; the console must not show the password or the S3 secret key.
// The block map beside the image is found and checked. The disk is
// checked from the host as in TestRestoreHTTP.
func TestRestoreShare(t *testing.T) {
	a := artifacts(t)
	missingRescue(t)
	t.Parallel()
	ri := makeSmallRestoreImage(t)
	for _, tc := range []struct {
		name  string
		start func(*testing.T) *remotetest.Share
		guest string // the server's address in the guest
		url   string // rescue.image=
		cred  func(*remotetest.Share) string
	}{
		{"smb", remotetest.StartSMBShare, "10.0.2.100:445", "smb://10.0.2.100/images/img.zst",
			func(s *remotetest.Share) string {
				return fmt.Sprintf("user=%s\npassword=%s\ndomain=RESCUE\n", s.Cred.User, s.Cred.Password)
			}},
		{"nfs", startNFSShare, "10.0.2.100:2049", "nfs://10.0.2.100:2049/export/img.zst?vers=3&mountport=2049",
			func(*remotetest.Share) string { return "" }},
		{"s3", remotetest.StartS3Share, "10.0.2.100:80", "s3://images/img.zst?endpoint=http://10.0.2.100:80&region=us-east-1",
			func(s *remotetest.Share) string {
				return fmt.Sprintf("s3_access_key=%s\ns3_secret_key=%s\n", s.Cred.S3AccessKey, s.Cred.S3SecretKey)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.start(t)
			for src, name := range map[string]string{ri.zst: "img.zst", ri.bmap: "img.zst.bmap"} {
				if out, err := exec.Command("cp", src, s.Local(name)).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v: %s", err, out)
				}
				os.Chmod(s.Local(name), 0o644)
			}
			credPath := filepath.Join(t.TempDir(), "nas.cred")
			if err := os.WriteFile(credPath, []byte(tc.cred(s)), 0o600); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{"/nas.cred": credPath}
			if tc.name == "nfs" {
				files["/nfs.sh"] = writeNFSScript(t)
			}
			srv, err := ServeFiles(files)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			target := filepath.Join(t.TempDir(), "blank.img")
			if err := BlankDisk(target, 2*smallImageSize); err != nil {
				t.Fatal(err)
			}
			vm := VM{
				Name:   t.Name(),
				Kernel: a.Kernel, Initrd: a.Initramfs,
				Cmdline: KernelCmdline("ip=dhcp", "rescue.action=restore,fix,verify",
					"rescue.image="+tc.url, "rescue.sha256="+ri.sha, "rescue.cred=http://10.0.2.100:8080/nas.cred",
					"rescue.target=auto", "rescue.done=poweroff"),
				Disks: []Disk{{Path: target}},
				Net: &Net{Forwards: map[string]string{
					tc.guest:          fmt.Sprintf("127.0.0.1:%d", s.Port),
					"10.0.2.100:8080": srv.Addr,
				}},
			}
			var r *Running
			var backupSrc string
			if tc.name == "smb" {
				// The hands-off backup (rescue.action=backup, run before
				// the restore) of a second disk to the share.
				backupSrc = filepath.Join(t.TempDir(), "src.img")
				patternDisk(t, backupSrc)
				vm.Disks = append(vm.Disks, Disk{Path: backupSrc})
				vm.Cmdline = strings.Replace(vm.Cmdline, "rescue.action=restore,", "rescue.action=backup,restore,", 1) +
					" rescue.source=/dev/vdb rescue.dest=smb://10.0.2.100/images/backup/b.img.zst"
				if err := os.Mkdir(filepath.Dir(s.Local("backup/x")), 0o777); err != nil {
					t.Fatal(err)
				}
				os.Chmod(filepath.Dir(s.Local("backup/x")), 0o777) // smbd's user writes there
			}
			if tc.name == "nfs" {
				r, err = nfsRoundTrip(t, s, vm)
			} else {
				r, _, err = HandsOff(context.Background(), vm, nil)
			}
			if r != nil {
				defer r.Stop()
			}
			if err != nil {
				t.Fatal(err)
			}
			out := r.Output()
			s.NoSecrets(t, out)
			if !strings.Contains(out, "ranges matched") {
				t.Errorf("the block map beside the image on the share was not used")
			}
			r.Stop()
			ri.checkRestored(t, target)
			if backupSrc != "" {
				if !strings.Contains(out, "RESCUE: STEP backup ok") {
					t.Errorf("no backup step ran")
				}
				checkBackupOnShare(t, "smb hands-off backup", s, "backup/b.img.zst", backupSrc)
			}
		})
	}
}

// startNFSShare serves a directory over NFSv3 on loopback.
func startNFSShare(t *testing.T) *remotetest.Share {
	dir := t.TempDir()
	port := remotetest.StartNFS(t, dir)
	return &remotetest.Share{Name: "nfs", Port: port, Local: func(name string) string { return filepath.Join(dir, name) }}
}

// nfsStep is one command of the NFS round trip's script (see nfsSteps).
type nfsStep struct {
	mark string // NFS-<mark>-RC=<exit status> ends it on the console
	cmd  string // in the rescue shell; $U is the backup's URL
	rc   string // the exit status wanted
	says string // a regexp one console line of the step must match (. never matches a newline)
}

// nfsURL is an nfs:// URL of the test server (go-nfs, StartNFS) as the
// guest reaches it.
func nfsURL(p string) string {
	return "'nfs://10.0.2.100:2049" + p + "?vers=3&mountport=2049'"
}

// nfsSteps: a backup to the export through the guest kernel's NFS client
// and a restore of it onto another disk, then every refusal, each a
// one-line message and exit 2: an existing image, a missing file, a
// missing directory, an export the server does not have, an export it
// refuses to this host (MNT3ERR_ACCES), an unreachable server.
var nfsSteps = []nfsStep{
	{"BACKUP", "imgcopy -progress plain -compress zstd /dev/vdb $U", "0", `backup published: nfs://`},
	{"RESTORE", "imgcopy -progress plain -yes $U /dev/vdc", "0", `restoring nfs://.* onto /dev/vdc`},
	{"EXISTS", "imgcopy -progress plain -compress zstd /dev/vdb $U", "2", `imgcopy: refused: .*exists.*use -yes to overwrite`},
	{"MISSING", "imgcopy -retries 1 " + nfsURL("/export/missing.img") + " /dev/vdc", "2", `imgcopy: .*not found: .*missing\.img`},
	{"NODIR", "imgcopy -retries 1 " + nfsURL("/export/nodir/b.img.zst") + " /dev/vdc", "2", `imgcopy: .*not found: 10\.0\.2\.100 has no export /export/nodir`},
	{"NOEXPORT", "imgcopy -retries 1 " + nfsURL("/nosuch/b.img.zst") + " /dev/vdc", "2", `imgcopy: .*not found: 10\.0\.2\.100 has no export /nosuch`},
	{"DENIED", "imgcopy -retries 1 -compress zstd /dev/vdb " + nfsURL(remotetest.NFSDenied+"/b.img.zst"), "2", `imgcopy: .*permission denied: 10\.0\.2\.100 does not export /denied to this host`},
	{"UNREACHABLE", "imgcopy -retries 1 -connect-timeout 2s 'nfs://10.0.2.101/export/b.img.zst?vers=3' /dev/vdc", "2", `imgcopy: .*host unreachable`},
}

// writeNFSScript writes the shell script of nfsSteps (the guest fetches
// it with wget: typing every command on the serial console into the line
// editor costs seconds per character under TCG).
func writeNFSScript(t *testing.T) string {
	var b strings.Builder
	b.WriteString("U=" + nfsURL("/export/b.img.zst") + "\n")
	for _, s := range nfsSteps {
		fmt.Fprintf(&b, "echo NFS-%s-START\n%s\necho NFS-%s-RC=$?\n", s.mark, s.cmd, s.mark)
	}
	p := filepath.Join(t.TempDir(), "nfs.sh")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// nfsRoundTrip runs the hands-off restore of vm with rescue.done=shell and
// then, in the rescue shell, the script of nfsSteps with two more disks:
// the one backed up and the one restored from the backup. The host then
// checks the files on the export (no .partial left, sha256sum -c of the
// manifest, zstd -dc | cmp) and the restored disk with cmp. Every stage
// has its own time limit and says which stage ran out.
func nfsRoundTrip(t *testing.T, s *remotetest.Share, vm VM) (*Running, error) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	patternDisk(t, src)
	if err := BlankDisk(dst, 8<<20); err != nil {
		t.Fatal(err)
	}
	vm.Cmdline = strings.Replace(strings.Replace(vm.Cmdline, "rescue.done=poweroff", "rescue.done=shell", 1),
		"rescue.target=auto", "rescue.target=/dev/vda", 1)
	vm.Disks = append(vm.Disks, Disk{Path: src}, Disk{Path: dst})
	vm.Keyboard = true
	vm.Timeout = Scaled(DefaultHandsOff)
	start := time.Now()
	r, err := Start(context.Background(), vm)
	if err != nil {
		return nil, err
	}
	if _, err := r.Expect(MarkDone, Scaled(2*time.Minute), MarkFailed); err != nil {
		return r, fmt.Errorf("nfs: the hands-off restore (boot included): %w%s", err, Diagnose(strings.Split(r.Output(), "\n")))
	}
	t.Logf("nfs: boot and hands-off restore: %.1fs", time.Since(start).Seconds())
	// The shell's line editor may drop what is typed before it set the
	// terminal up: type a probe until it answers.
	ready := regexp.MustCompile(`(?m)NFS-READY-2\r?$`)
	for i := 0; ; i++ {
		if err := r.Type("echo NFS-READY-$((1+1))\n"); err != nil {
			return r, err
		}
		if _, err = r.Expect(ready, Scaled(10*time.Second)); err == nil {
			break
		}
		if i == 3 {
			return r, fmt.Errorf("nfs: the rescue shell did not answer after DONE: %w\n%s", err, r.Tail(20))
		}
	}
	if err := r.Type("wget -O /tmp/nfs.sh http://10.0.2.100:8080/nfs.sh && gosh /tmp/nfs.sh\n"); err != nil {
		return r, err
	}
	for _, c := range nfsSteps {
		t0 := time.Now()
		if _, err := r.Expect(regexp.MustCompile(`(?m)NFS-`+c.mark+`-START\r?$`), Scaled(30*time.Second)); err != nil {
			return r, fmt.Errorf("nfs: step %s did not start: %w\n%s", c.mark, err, r.Tail(30))
		}
		before := r.Seen() // the end of the START line: the step's lines may have come with it
		m, err := r.Expect(regexp.MustCompile(`(?m)NFS-`+c.mark+`-RC=(\d+)\r?$`), Scaled(40*time.Second))
		if err != nil {
			return r, fmt.Errorf("nfs: step %s (%s) did not end within %v: %w\n%s", c.mark, c.cmd, Scaled(40*time.Second), err, r.Tail(30))
		}
		said := r.Output()[before:]
		t.Logf("nfs: %s: exit %s in %.1fs", c.mark, m[1], time.Since(t0).Seconds())
		if m[1] != c.rc {
			return r, fmt.Errorf("nfs: step %s: exit %s, want %s\n%s", c.mark, m[1], c.rc, said)
		}
		if !regexp.MustCompile(c.says).MatchString(said) {
			t.Errorf("nfs: step %s: no console line matches %q:\n%s", c.mark, c.says, said)
		}
	}
	r.Stop()
	checkBackupOnShare(t, "nfs", s, "b.img.zst", src)
	if out, err := exec.Command("cmp", src, dst).CombinedOutput(); err != nil {
		t.Errorf("nfs: the disk restored from the export differs: %v %s", err, out)
	}
	return r, nil
}

// patternDisk writes an 8 MiB disk of data that is neither zeros nor a
// partition table (the disk the share tests back up).
func patternDisk(t *testing.T, path string) {
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkBackupOnShare checks from the host, with stock tools, the backup
// name of disk src on share s: the image and its .bmap and .sha256 are
// there, no temporary file is left, sha256sum -c accepts the manifest and
// zstd -dc of the image is src byte for byte.
func checkBackupOnShare(t *testing.T, what string, s *remotetest.Share, name, src string) {
	t.Helper()
	dir := filepath.Dir(s.Local(name))
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	got := " " + strings.Join(names, " ") + " "
	base := filepath.Base(name)
	for _, n := range []string{base, base + ".bmap", base + ".sha256"} {
		if !strings.Contains(got, " "+n+" ") {
			t.Errorf("%s: %s missing on the share:%s", what, n, got)
		}
	}
	if strings.Contains(got, ".partial") {
		t.Errorf("%s: temporary files left on the share:%s", what, got)
	}
	c := exec.Command("sha256sum", "-c", "--ignore-missing", base+".sha256")
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		t.Errorf("%s: sha256sum -c: %v\n%s", what, err, out)
	}
	if out, err := exec.Command("sh", "-c", "zstd -dc "+s.Local(name)+" | cmp - "+src).CombinedOutput(); err != nil {
		t.Errorf("%s: zstd -dc | cmp: %v %s", what, err, out)
	}
}
