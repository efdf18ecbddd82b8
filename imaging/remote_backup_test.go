package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/remotetest"
	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/remote/s3"
)

// shareOpts are the Options of a copy to or from share s, logging into logs.
func shareOpts(t *testing.T, s *remotetest.Share, src, dst string, logs *syncLog) Options {
	o := copyOpts(t, src, dst)
	o.Cred, o.ConnectTimeout, o.Retries, o.RetryDelay = s.Cred, 3*time.Second, 2, 10*time.Millisecond
	o.Log = logs.logf
	return o
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) logf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, f+"\n", a...)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// shareFiles lists the names in the share's directory on the server's
// file system (not through our client), without S3 server internals.
func shareFiles(t *testing.T, s *remotetest.Share) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(s.Local("x")))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if s.Name == "s3" && strings.HasPrefix(e.Name(), ".sgw") {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// TestRemoteBackup backs a disk (a loop device, or a file where loop
// devices are missing) with a GPT up to each protocol's real server,
// compressed and not, then checks it with independent tools: the files
// on the server's disk, the manifest downloaded with the stock client and
// checked by sha256sum -c, zstd -dc | cmp; restores it from the share
// (block map found beside it) onto another device and compares with cmp.
// An existing image is refused without -yes; with -yes a source without
// a GPT replaces it and the stale layout file goes.
func TestRemoteBackup(t *testing.T) {
	gpttest.Need(t, "sgdisk", "zstd", "sha256sum", "cmp")
	for _, sh := range remotetest.Shares {
		t.Run(sh.Name, func(t *testing.T) {
			s := sh.Start(t)
			dir := t.TempDir()
			img := sgdiskImage(t, dir, 24<<20, testParts[:2])
			fillRandom(t, img, 6<<20, 3<<20, 9) // data that does not compress away
			want := sha256sum(t, img)
			src := img
			if os.Geteuid() == 0 {
				if dev, _ := gpttest.AttachLoop(t, img, "-r"); dev != "" {
					src = dev
				}
			}
			logs := &syncLog{}
			for _, c := range []struct{ comp, name string }{{"zstd", "disk.img.zst"}, {"none", "disk.img"}} {
				o := shareOpts(t, s, src, s.URL(c.name, 0), logs)
				o.Compress, o.Verify = c.comp, true
				res, err := Copy(context.Background(), o)
				if err != nil {
					t.Fatalf("%s backup: %v\n%s", c.comp, err, logs)
				}
				if res.SHA256 != want || !res.HasGPT || !res.Verified || res.BmapRanges == 0 {
					t.Errorf("%s: result %+v", c.comp, res)
				}
				// On the server's disk: the image and its companions, nothing else.
				got := strings.Join(shareFiles(t, s), " ")
				for _, n := range []string{c.name, c.name + ".gpt.json", c.name + ".bmap", c.name + ".sha256"} {
					if !strings.Contains(" "+got+" ", " "+n+" ") {
						t.Errorf("%s: %s missing on the server: %s", c.comp, n, got)
					}
				}
				if strings.Contains(got, "partial") {
					t.Errorf("%s: temporary files left: %s", c.comp, got)
				}
				// The stock client's download checks with sha256sum -c.
				dl := t.TempDir()
				s.Get(t, c.name, filepath.Join(dl, c.name))
				s.Get(t, c.name+".sha256", filepath.Join(dl, c.name+".sha256"))
				cmd := exec.Command("sha256sum", "-c", "--ignore-missing", c.name+".sha256")
				cmd.Dir = dl
				if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), c.name+": OK") {
					t.Errorf("%s: sha256sum -c of the downloaded manifest: %v\n%s", c.comp, err, out)
				}
				dec := "cat "
				if c.comp == "zstd" {
					dec = "zstd -dc "
				}
				if out, err := exec.Command("sh", "-c", dec+filepath.Join(dl, c.name)+" | cmp - "+img).CombinedOutput(); err != nil {
					t.Errorf("%s: %s| cmp: %v %s", c.comp, dec, err, out)
				}
				// Restored from the share onto another device.
				target := gpttest.Sparse(t, t.TempDir(), "target.img", 24<<20)
				dst := target
				if src != img {
					dst = gpttest.Loop(t, target)
				}
				ro := shareOpts(t, s, s.URL(c.name, 0), dst, logs)
				ro.Yes = true
				rres, err := Copy(context.Background(), ro)
				if err != nil {
					t.Fatalf("%s restore: %v\n%s", c.comp, err, logs)
				}
				if rres.BmapPath == "" {
					t.Errorf("%s: the block map beside the image was not used", c.comp)
				}
				cmpFiles(t, img, dst, -1)
			}

			// An existing image: refused without -yes, untouched.
			before := sha256sum(t, s.Local("disk.img"))
			other := tmp(t, "nogpt.img")
			makeImage(t, other, 8<<20, 64<<10, 0.5, 3)
			o := shareOpts(t, s, other, s.URL("disk.img", 0), logs)
			o.Compress = "none"
			if _, err := Copy(context.Background(), o); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "-yes") {
				t.Errorf("overwrite without -yes: %v", err)
			}
			if sha256sum(t, s.Local("disk.img")) != before {
				t.Errorf("the refused backup changed the image")
			}
			// With -yes: replaced, and the old .gpt.json removed (no GPT now).
			o.Yes = true
			if _, err := Copy(context.Background(), o); err != nil {
				t.Fatalf("overwrite with -yes: %v\n%s", err, logs)
			}
			cmpFiles(t, other, s.Local("disk.img"), -1)
			if _, err := os.Stat(s.Local("disk.img.gpt.json")); err == nil {
				t.Errorf("the stale layout file of the old image is still there")
			}

			// Signed (-sign): the stock minisign verifies the signatures on the
			// share; a -pubkey restore from the share checks them.
			if _, err := exec.LookPath("minisign"); err == nil || os.Getenv("CI") != "" {
				pub, sec := minisignKeys(t, t.TempDir(), "k")
				so := shareOpts(t, s, img, s.URL("signed.img.zst", 0), logs)
				so.Compress, so.SignKey = "zstd", sec
				res, err := Copy(context.Background(), so)
				if err != nil || len(res.Signatures) != 2 {
					t.Fatalf("signed backup: %v %+v", err, res)
				}
				for _, f := range []string{"signed.img.zst.sha256", "signed.img.zst.bmap"} {
					gpttest.Run(t, "minisign", "-V", "-p", pub, "-m", s.Local(f))
				}
				ro := shareOpts(t, s, s.URL("signed.img.zst", 0), tmp(t, "signed.img"), logs)
				ro.PubKey = pub
				if _, err := Copy(context.Background(), ro); err != nil {
					t.Fatalf("-pubkey restore of the signed backup: %v", err)
				}
				cmpFiles(t, img, ro.Dst, -1)
			}
			s.NoSecrets(t, logs.String())
		})
	}
}

// TestRemoteBackupFailures: a backup whose connection is cut mid-upload,
// or whose server vanishes, fails with a clear error and leaves nothing
// under the image's name or its companions' (the cut case cleans up its
// temporary file through a new connection, S3 aborts the multipart
// upload); a backup killed with SIGKILL leaves at most a hidden .partial
// file, and the next backup to the name succeeds.
func TestRemoteBackupFailures(t *testing.T) {
	gpttest.Need(t, "cmp")
	old := s3.PartSize
	s3.PartSize = 5 << 20 // S3's minimum: the cut comes after a few parts
	t.Cleanup(func() { s3.PartSize = old })
	for _, sh := range remotetest.Shares {
		t.Run(sh.Name, func(t *testing.T) {
			s := sh.Start(t)
			img := tmp(t, "random.img")
			makeImage(t, img, 24<<20, 1<<20, 1, 5) // incompressible
			logs := &syncLog{}
			onlyTemps := func(what string) {
				t.Helper()
				for _, n := range shareFiles(t, s) {
					if !strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".partial") {
						t.Errorf("%s: %s is on the share", what, n)
					}
				}
			}
			for _, c := range []struct {
				name string
				kill bool
			}{{"cut", false}, {"gone", true}} {
				// (S3 sends each 5 MiB part on a connection of its own.)
				cut := remotetest.NewCutUp(t, fmt.Sprintf("127.0.0.1:%d", s.Port), 3<<20)
				o := shareOpts(t, s, img, s.URL(c.name+".img.zst", cut.Port), logs)
				o.Compress = "zstd"
				cut.Vanish = c.kill
				start := time.Now()
				_, err := Copy(context.Background(), o)
				if err == nil {
					t.Fatalf("%s: the backup succeeded", c.name)
				}
				if strings.Count(err.Error(), "\n") > 0 || time.Since(start) > 60*time.Second {
					t.Errorf("%s: error after %v: %q", c.name, time.Since(start), err)
				}
				t.Logf("%s: %v", c.name, err)
				if c.kill {
					onlyTemps(c.name)
				} else if got := shareFiles(t, s); len(got) != 0 {
					t.Errorf("%s: left on the share: %v", c.name, got)
				}
			}

			// Killed: a copy of the test binary backs stdin up and gets SIGKILL.
			credFile := filepath.Join(t.TempDir(), "cred")
			c := s.Cred
			os.WriteFile(credFile, []byte(fmt.Sprintf("user=%s\npassword=%s\ndomain=%s\nssh_key=%s\nknown_hosts=%s\ns3_access_key=%s\ns3_secret_key=%s\n",
				c.User, c.Password, c.Domain, c.SSHKey, c.KnownHosts, c.S3AccessKey, c.S3SecretKey)), 0o600)
			url := s.URL("killed.img", 0)
			cmd := exec.Command(os.Args[0], "-test.run=^TestRemoteBackupHelper$")
			cmd.Env = append(os.Environ(), "REMOTE_BACKUP_HELPER="+url, "REMOTE_BACKUP_CRED="+credFile)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			f, _ := os.Open(img)
			io.Copy(stdin, f) // blocks until the backup has taken most of it
			f.Close()
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			if strings.Contains(out.String(), "backup committed") {
				t.Fatalf("the helper finished before the kill:\n%s", out.String())
			}
			onlyTemps("killed")
			o := shareOpts(t, s, img, url, logs)
			o.Compress = "none"
			if _, err := Copy(context.Background(), o); err != nil {
				t.Fatalf("backup after the killed one: %v", err)
			}
			cmpFiles(t, img, s.Local("killed.img"), -1)
			s.NoSecrets(t, logs.String(), out.String())
		})
	}
}

// TestRemoteBackupHelper is the process TestRemoteBackupFailures kills: a
// raw backup of stdin to $REMOTE_BACKUP_HELPER that never ends by itself
// (stdin stays open).
func TestRemoteBackupHelper(t *testing.T) {
	url := os.Getenv("REMOTE_BACKUP_HELPER")
	if url == "" {
		t.Skip("run by TestRemoteBackupFailures")
	}
	c, err := cred.Load(os.Getenv("REMOTE_BACKUP_CRED"))
	if err != nil {
		t.Fatal(err)
	}
	s3.PartSize = 5 << 20
	_, err = Copy(context.Background(), Options{Src: "-", Dst: url, Compress: "none", Cred: c, BufferSize: 256 << 10, Buffers: 4,
		Log: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }})
	t.Fatalf("the backup ended: %v", err)
}
