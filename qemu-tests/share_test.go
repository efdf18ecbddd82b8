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
// reached through guestfwd (restrict=on). The
// credentials come from rescue.cred=, an http:// URL on the test's own
// server; the console must not show the password or the S3 secret key.
// The block map beside the image is found and checked. The disk is
// checked from the host as in TestRestoreHTTP.
func TestRestoreShare(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()
	ri := makeRestoreImage(t, tl)
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
			srv, err := ServeFiles(map[string]string{"/nas.cred": credPath})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			target := filepath.Join(t.TempDir(), "blank.img")
			if err := BlankDisk(target, 2<<30); err != nil {
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
			if tc.name == "nfs" {
				r, err = nfsRoundTrip(t, s, vm, target)
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
		})
	}
}

// startNFSShare serves a directory over NFSv3 on loopback.
func startNFSShare(t *testing.T) *remotetest.Share {
	dir := t.TempDir()
	port := remotetest.StartNFS(t, dir)
	return &remotetest.Share{Name: "nfs", Port: port, Local: func(name string) string { return filepath.Join(dir, name) }}
}

// nfsRoundTrip runs the hands-off restore of vm with rescue.done=shell and
// then, in the rescue shell, a backup (imgcopy -compress zstd) of a second
// disk to the NFS export through the guest kernel's NFS client and a
// restore of it onto a third disk; the host checks the files on the
// export (no .partial left, sha256sum -c of the manifest, zstd -dc | cmp)
// and the third disk with cmp.
func nfsRoundTrip(t *testing.T, s *remotetest.Share, vm VM, target string) (*Running, error) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := BlankDisk(dst, 8<<20); err != nil {
		t.Fatal(err)
	}
	vm.Cmdline = strings.Replace(strings.Replace(vm.Cmdline, "rescue.done=poweroff", "rescue.done=shell", 1),
		"rescue.target=auto", "rescue.target=/dev/vda", 1)
	vm.Disks = append(vm.Disks, Disk{Path: src}, Disk{Path: dst})
	vm.Keyboard = true
	vm.Timeout = Scaled(DefaultHandsOff + time.Minute)
	r, err := Start(context.Background(), vm)
	if err != nil {
		return nil, err
	}
	if _, err := r.Expect(MarkDone, 0, MarkFailed); err != nil {
		return r, fmt.Errorf("%w%s", err, Diagnose(strings.Split(r.Output(), "\n")))
	}
	url := "'nfs://10.0.2.100:2049/export/b.img.zst?vers=3&mountport=2049'"
	for _, c := range []struct{ cmd, mark, rc, says string }{
		{"imgcopy -progress plain -compress zstd /dev/vdb " + url, "NFS-BACKUP", "0", ""},
		{"imgcopy -progress plain -yes " + url + " /dev/vdc", "NFS-RESTORE", "0", ""},
		{"imgcopy -progress plain -compress zstd /dev/vdb " + url, "NFS-EXISTS", "2", "use -yes to overwrite"},
		{"imgcopy -retries 1 " + strings.Replace(url, "b.img.zst", "missing.img", 1) + " /dev/vdc", "NFS-MISSING", "2", "not found"},
		{"imgcopy -retries 1 -connect-timeout 2s 'nfs://10.0.2.101/export/b.img.zst?vers=3' /dev/vdc", "NFS-UNREACHABLE", "2", "unreachable"},
	} {
		before := len(r.Output())
		time.Sleep(time.Second)
		if err := r.Type(c.cmd + "; echo " + c.mark + "-RC=$?\n"); err != nil {
			return r, err
		}
		m, err := r.Expect(regexp.MustCompile(c.mark+`-RC=(\d+)`), Scaled(60*time.Second))
		if err != nil {
			return r, fmt.Errorf("%s: %w\n%s", c.mark, err, r.Tail(30))
		}
		if m[1] != c.rc {
			return r, fmt.Errorf("%s: exit %s, want %s\n%s", c.mark, m[1], c.rc, r.Tail(30))
		}
		if said := r.Output()[before:]; !strings.Contains(said, c.says) {
			t.Errorf("%s: the output does not say %q:\n%s", c.mark, c.says, said)
		}
	}
	r.Stop()
	ents, _ := os.ReadDir(filepath.Dir(s.Local("x")))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	got := " " + strings.Join(names, " ") + " "
	for _, n := range []string{"b.img.zst", "b.img.zst.bmap", "b.img.zst.sha256"} {
		if !strings.Contains(got, " "+n+" ") {
			t.Errorf("nfs: %s missing on the export:%s", n, got)
		}
	}
	if strings.Contains(got, ".partial") {
		t.Errorf("nfs: temporary files left on the export:%s", got)
	}
	c := exec.Command("sha256sum", "-c", "--ignore-missing", "b.img.zst.sha256")
	c.Dir = filepath.Dir(s.Local("x"))
	if out, err := c.CombinedOutput(); err != nil {
		t.Errorf("nfs: sha256sum -c: %v\n%s", err, out)
	}
	if out, err := exec.Command("sh", "-c", "zstd -dc "+s.Local("b.img.zst")+" | cmp - "+src).CombinedOutput(); err != nil {
		t.Errorf("nfs: zstd -dc | cmp: %v %s", err, out)
	}
	if out, err := exec.Command("cmp", src, dst).CombinedOutput(); err != nil {
		t.Errorf("nfs: the disk restored from the export differs: %v %s", err, out)
	}
	return r, nil
}
