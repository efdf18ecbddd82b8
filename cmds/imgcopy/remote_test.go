package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/remotetest"
)

// TestRemoteCLI restores from SMB and S3 with -cred, then runs the error
// cases; no output (plain or -json, stdout or stderr) shows a secret.
func TestRemoteCLI(t *testing.T) {
	for _, sh := range remotetest.Shares[1:] { // smb, s3: the ones with passwords
		t.Run(sh.Name, func(t *testing.T) {
			s := sh.Start(t)
			dir := t.TempDir()
			img := filepath.Join(dir, "img")
			data := writeImage(t, img, 3<<20)
			if err := os.WriteFile(s.Local("img"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			credFile := filepath.Join(dir, "cred")
			var c strings.Builder
			if s.Cred.User != "" {
				fmt.Fprintf(&c, "user=%s\npassword=%s\n", s.Cred.User, s.Cred.Password)
			}
			if s.Cred.S3AccessKey != "" {
				fmt.Fprintf(&c, "s3_access_key=%s\ns3_secret_key=%s\n", s.Cred.S3AccessKey, s.Cred.S3SecretKey)
			}
			os.WriteFile(credFile, []byte(c.String()), 0o600)
			bad := filepath.Join(dir, "bad")
			os.WriteFile(bad, []byte(strings.ReplaceAll(c.String(), s.Secrets[0], "Wrong-"+s.Secrets[0]+"-x")), 0o600)
			secrets := append([]string{"Wrong-" + s.Secrets[0] + "-x"}, s.Secrets...)
			inline := s.URL("img", 0)
			if s.Name == "smb" {
				inline = strings.Replace(inline, "smb://", "smb://nobody:"+s.Cred.Password+"@", 1)
			}
			for _, tc := range []struct {
				name     string
				args     []string
				code     int
				inStderr string
			}{
				{"restore", []string{"-cred", credFile, s.URL("img", 0), filepath.Join(dir, "a")}, 0, ""},
				{"restore json", []string{"-json", "-cred", credFile, s.URL("img", 0), filepath.Join(dir, "b")}, 0, ""},
				{"password in URL", []string{"-cred", credFile, inline, filepath.Join(dir, "c")}, 0, ""},
				{"wrong password", []string{"-retries", "1", "-cred", bad, s.URL("img", 0), filepath.Join(dir, "d")}, 2, "authentication failed"},
				{"missing", []string{"-retries", "1", "-cred", credFile, s.URL("nothere.img", 0), filepath.Join(dir, "e")}, 2, "not found"},
				{"backup", []string{"-compress", "zstd", "-cred", credFile, img, s.URL("b.img.zst", 0)}, 0, ""},
				{"backup exists", []string{"-compress", "zstd", "-cred", credFile, img, s.URL("b.img.zst", 0)}, 2, "use -yes to overwrite"},
				{"restore to a share", []string{"-cred", credFile, img, s.URL("c.img", 0)}, 2, "give -compress"},
				{"unreachable", []string{"-retries", "1", "-connect-timeout", "1s", "-cred", credFile, s.URL("img", remotetest.FreePort(t)), filepath.Join(dir, "f")}, 2, "unreachable"},
			} {
				var stdout, stderr bytes.Buffer
				code := run(append([]string{"-progress", "plain", "-progress-interval", "10ms"}, tc.args...), &stdout, &stderr)
				out := stdout.String() + stderr.String()
				if code != tc.code {
					t.Errorf("%s: exit %d, want %d\n%s", tc.name, code, tc.code, out)
				}
				if !strings.Contains(stderr.String(), tc.inStderr) {
					t.Errorf("%s: stderr lacks %q:\n%s", tc.name, tc.inStderr, stderr.String())
				}
				for _, sec := range secrets {
					if strings.Contains(out, sec) {
						t.Errorf("%s: a secret is in the output:\n%s", tc.name, out)
					}
				}
				if tc.name == "backup" {
					if out, err := exec.Command("sh", "-c", "zstd -dc "+s.Local("b.img.zst")+" | cmp - "+img).CombinedOutput(); err != nil {
						t.Errorf("backup: zstd -dc | cmp: %v %s", err, out)
					}
				} else if tc.code == 0 {
					got, _ := os.ReadFile(tc.args[len(tc.args)-1])
					if !bytes.Equal(got, data) {
						t.Errorf("%s: restored file differs", tc.name)
					}
				} else if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); lines > 3 {
					t.Logf("%s: %d lines on stderr:\n%s", tc.name, lines+1, stderr.String())
				}
			}
		})
	}
}
