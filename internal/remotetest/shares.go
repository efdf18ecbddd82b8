package remotetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/remote/cred"
)

// Share is one protocol's running server with a writable place for images.
type Share struct {
	Name string
	// URL returns the URL of file name on the share, reached through
	// port (0: the server's own port; another: a proxy such as Cut).
	URL func(name string, port int) string
	// Local returns the server-side path of name (for checks that do not
	// use our client).
	Local func(name string) string
	Port  int
	Cred  *cred.Cred
	// Secrets must never appear in any output.
	Secrets []string
	// Get downloads name from the share into dst with the protocol's
	// stock client (smbclient, OpenSSH's sftp, curl --aws-sigv4), for
	// checks independent of our client.
	Get func(t testing.TB, name, dst string)
}

// stock runs a stock client, failing the test with its output.
func stock(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(Need(t, name, name), args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// StartSFTPShare starts sshd; the share is a directory owned by nobody.
func StartSFTPShare(t *testing.T) *Share {
	s := StartSSHD(t)
	dir := OpenDir(t)
	Chown(t, dir, "nobody")
	return &Share{
		Name: "sftp",
		URL: func(name string, port int) string {
			if port == 0 {
				return fmt.Sprintf("sftp://nobody@127.0.0.1:%d%s/%s", s.Port, dir, name)
			}
			return fmt.Sprintf("sftp://nobody@127.0.0.1:%d%s/%s?hostkey=%s", port, dir, name, s.HostKeyFP)
		},
		Local: func(name string) string { return filepath.Join(dir, name) },
		Port:  s.Port,
		Cred:  &cred.Cred{SSHKey: s.KeyFile, KnownHosts: s.KnownHosts},
		Get: func(t testing.TB, name, dst string) {
			stock(t, "sftp", "-q", "-i", s.KeyFile, "-P", fmt.Sprint(s.Port), "-o", "UserKnownHostsFile="+s.KnownHosts,
				"-o", "BatchMode=yes", fmt.Sprintf("nobody@127.0.0.1:%s/%s", dir, name), dst)
		},
	}
}

// StartSMBShare starts smbd; the share is "images".
func StartSMBShare(t *testing.T) *Share {
	s := StartSamba(t, 0)
	c, err := cred.Parse(strings.NewReader("user=nobody\npassword=" + s.Password + "\ndomain=RESCUE\n"))
	if err != nil {
		t.Fatal(err)
	}
	return &Share{
		Name: "smb",
		URL: func(name string, port int) string {
			if port == 0 {
				port = s.Port
			}
			return fmt.Sprintf("smb://127.0.0.1:%d/images/%s", port, name)
		},
		Local:   func(name string) string { return filepath.Join(s.Root, name) },
		Port:    s.Port,
		Cred:    c,
		Secrets: []string{s.Password},
		Get: func(t testing.TB, name, dst string) {
			auth := filepath.Join(t.TempDir(), "smbauth")
			if err := os.WriteFile(auth, []byte("username=nobody\npassword="+s.Password+"\ndomain=RESCUE\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			stock(t, "smbclient", "-q", "-p", fmt.Sprint(s.Port), "-A", auth, "//127.0.0.1/images", "-c", "get "+name+" "+dst)
		},
	}
}

// StartS3Share starts versitygw; the share is bucket "images".
func StartS3Share(t *testing.T) *Share {
	s := StartS3(t)
	c, err := cred.Parse(strings.NewReader("s3_access_key=" + s.Access + "\ns3_secret_key=" + s.Secret + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return &Share{
		Name: "s3",
		URL: func(name string, port int) string {
			if port == 0 {
				port = s.Server.Port
			}
			return fmt.Sprintf("s3://images/%s?endpoint=http://127.0.0.1:%d&region=us-east-1", name, port)
		},
		Local:   func(name string) string { return filepath.Join(s.Root, "images", name) },
		Port:    s.Server.Port,
		Cred:    c,
		Secrets: []string{s.Secret},
		Get: func(t testing.TB, name, dst string) {
			stock(t, "curl", "-sSf", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", s.Access+":"+s.Secret,
				"-o", dst, fmt.Sprintf("http://127.0.0.1:%d/images/%s", s.Server.Port, name))
		},
	}
}

// Shares lists the protocols whose servers the tests start.
var Shares = []struct {
	Name  string
	Start func(*testing.T) *Share
}{
	{"sftp", StartSFTPShare},
	{"smb", StartSMBShare},
	{"s3", StartS3Share},
}

// NoSecrets fails the test when a secret of s appears in any of texts.
func (s *Share) NoSecrets(t testing.TB, texts ...string) {
	t.Helper()
	for _, x := range texts {
		for _, sec := range s.Secrets {
			if strings.Contains(x, sec) {
				t.Errorf("the secret appears in output: %q", x)
			}
		}
	}
}
