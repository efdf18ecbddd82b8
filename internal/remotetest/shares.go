package remotetest

import (
	"fmt"
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
