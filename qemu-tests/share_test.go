package qemutests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
			r, _, err := HandsOff(context.Background(), VM{
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
			}, nil)
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
			if err := CheckFixedGPT(target, 512, ri.img.GPT.Primary); err != nil {
				t.Error(err)
			}
			if err := SgdiskVerify(target); err != nil {
				t.Error(err)
			}
			after, err := PartitionDigests(target, 512)
			if err != nil {
				t.Fatal(err)
			}
			if err := CompareDigests(ri.digest, after); err != nil {
				t.Errorf("restored partitions differ from the image's: %v", err)
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
