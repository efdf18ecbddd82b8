package imaging

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/remotetest"
)

// TestRemoteRestore restores from each protocol's real server: a zstd
// image and a raw one, each with its block map beside it (found by the
// restore), and once through a proxy that cuts the connection mid-way.
// The images are put on the share by the server's file system (cp), not
// by our client; the result is checked with cmp and sha256sum.
func TestRemoteRestore(t *testing.T) {
	gpttest.Need(t, "cmp", "sha256sum", "cp")
	for _, sh := range remotetest.Shares {
		t.Run(sh.Name, func(t *testing.T) {
			s := sh.Start(t)
			raw := tmp(t, "disk.img")
			makeImage(t, raw, 24<<20+4096, 64<<10, 0.3, 7)
			want := sha256sum(t, raw)
			zst := tmp(t, "disk.img.zst")
			ourBackup(t, raw, zst, "zstd")
			put := func(src, name string) {
				if out, err := exec.Command("cp", "--sparse=always", src, s.Local(name)).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v: %s", err, out)
				}
				exec.Command("chown", "nobody", s.Local(name)).Run()
			}
			put(zst, "disk.img.zst")
			put(zst+".bmap", "disk.img.zst.bmap")
			put(raw, "disk.img")
			put(zst+".bmap", "disk.img.bmap")

			var mu sync.Mutex
			var logs strings.Builder
			opts := func(src, dst string) Options {
				o := copyOpts(t, src, dst)
				o.Cred, o.ConnectTimeout, o.Retries, o.RetryDelay = s.Cred, 3*time.Second, 3, 10*time.Millisecond
				o.Log = func(f string, a ...any) {
					mu.Lock()
					defer mu.Unlock()
					fmt.Fprintf(&logs, f+"\n", a...)
				}
				return o
			}
			for _, c := range []struct {
				name, file string
				port       int
				comp       string
			}{
				{"zstd", "disk.img.zst", 0, "zstd"},
				{"raw", "disk.img", 0, "none"},
				{"zstd-cut", "disk.img.zst", -1, "zstd"},
				{"raw-cut", "disk.img", -1, "none"},
			} {
				port := c.port
				var cut *remotetest.Cut
				if port < 0 {
					cut = remotetest.NewCut(t, fmt.Sprintf("127.0.0.1:%d", s.Port), 1<<20+4321)
					port = cut.Port
				}
				dst := tmp(t, "restored.img")
				res, err := Copy(context.Background(), opts(s.URL(c.file, port), dst))
				if err != nil {
					t.Fatalf("%s: %v\n%s", c.name, err, logs.String())
				}
				cmpFiles(t, raw, dst, -1)
				if got := sha256sum(t, dst); got != want || (res.SHA256 != want && res.BmapSHA256 != want) {
					t.Errorf("%s: SHA-256 %s (result %s, map %s), want %s", c.name, got, res.SHA256, res.BmapSHA256, want)
				}
				if res.Compression != c.comp {
					t.Errorf("%s: compression %s", c.name, res.Compression)
				}
				if !strings.HasSuffix(strings.Split(res.BmapPath, "?")[0], ".bmap") || res.BmapRanges == 0 {
					t.Errorf("%s: the block map beside the image was not used (%q, %d ranges)", c.name, res.BmapPath, res.BmapRanges)
				}
				if cut != nil && cut.Cuts.Load() != 1 {
					t.Errorf("%s: %d cuts", c.name, cut.Cuts.Load())
				}
			}
			if !strings.Contains(logs.String(), "resumed at byte") {
				t.Errorf("no resume in the log:\n%s", logs.String())
			}
			if ranged := strings.Contains(logs.String(), "ranges of 2.0 MiB at once"); ranged != (sh.Name != "sftp") {
				t.Errorf("read in parallel ranges: %v, want %v; the log:\n%s", ranged, sh.Name != "sftp", logs.String())
			}
			s.NoSecrets(t, logs.String())
		})
	}
}
