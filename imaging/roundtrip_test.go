package imaging

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
	"github.com/esxi-rescue/rescue/internal/zeros"
)

// compressors make a compressed copy of an image with the real CLI tools
// (independent writers) or with our own backup direction.
var compressors = []struct {
	name string
	ext  string
	make func(t *testing.T, raw, out string)
}{
	{"none", "", func(t *testing.T, raw, out string) { gpttest.Run(t, "cp", "--sparse=always", raw, out) }},
	{"gzip-cli", ".gz", func(t *testing.T, raw, out string) { shell(t, "gzip -c -1 "+raw+" > "+out) }},
	{"zstd-cli", ".zst", func(t *testing.T, raw, out string) { gpttest.Run(t, "zstd", "-q", "-T0", raw, "-o", out) }},
	{"zstd-cli-multiframe", ".zst", func(t *testing.T, raw, out string) {
		shell(t, "head -c 1000000 "+raw+" | zstd -q > "+out+" && tail -c +1000001 "+raw+" | zstd -q >> "+out)
	}},
	{"xz-cli", ".xz", func(t *testing.T, raw, out string) { shell(t, "xz -c -0 -T2 "+raw+" > "+out) }},
	{"zstd-ours", ".zst", func(t *testing.T, raw, out string) { ourBackup(t, raw, out, "zstd") }},
	{"gzip-ours", ".gz", func(t *testing.T, raw, out string) { ourBackup(t, raw, out, "gzip") }},
}

func shell(t *testing.T, cmd string) {
	t.Helper()
	gpttest.Need(t, "gzip", "zstd", "xz")
	if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
}

func ourBackup(t *testing.T, raw, out, comp string) {
	t.Helper()
	opt := copyOpts(t, raw, out)
	opt.Compress = comp
	mustCopy(t, opt)
}

func TestRoundTrip(t *testing.T) {
	gpttest.Need(t, "cmp", "sha256sum", "gzip", "zstd", "xz")
	images := []struct {
		name    string
		size    int64
		density float64
	}{
		{"dense", 3<<20 + 12345, 1},   // odd size: not a multiple of any block
		{"sparse", 32 << 20, 0.1},     // mostly holes
		{"empty-tail", 8 << 20, 0.02}, // almost nothing
	}
	for _, im := range images {
		dir := t.TempDir()
		raw := dir + "/" + im.name + ".img"
		makeImage(t, raw, im.size, 64<<10, im.density, uint64(im.size))
		want := sha256sum(t, raw)
		for _, c := range compressors {
			t.Run(im.name+"/"+c.name, func(t *testing.T) {
				src := t.TempDir() + "/image" + c.ext
				c.make(t, raw, src)
				dst := t.TempDir() + "/out.img"
				res := mustCopy(t, copyOpts(t, src, dst))
				cmpFiles(t, raw, dst, -1)
				got := res.SHA256
				if res.SHA256From == "bmap" { // our backups have a map beside them
					got = res.BmapSHA256
				}
				if got != want {
					t.Errorf("SHA256 %s (from %s), sha256sum says %s", got, res.SHA256From, want)
				}
				if res.Bytes != im.size {
					t.Errorf("Bytes %d, want %d", res.Bytes, im.size)
				}
				wantComp := strings.SplitN(c.name, "-", 2)[0]
				if res.Compression != wantComp {
					t.Errorf("Compression %q, want %q", res.Compression, wantComp)
				}
				// A new file target gets holes where the image has zeros.
				if got, most := allocated(t, dst), int64(float64(im.size)*im.density)+(2<<20); im.density < 1 && got > most {
					t.Errorf("target occupies %d bytes, want at most %d (holes for zeros)", got, most)
				}
			})
		}
	}
}

// TestRoundTripBuffers exercises buffer sizes that do not divide the image
// and the head hold-back (first MiB written last).
func TestRoundTripBuffers(t *testing.T) {
	gpttest.Need(t, "cmp")
	dir := t.TempDir()
	raw := dir + "/img"
	makeImage(t, raw, 5<<20+4097, 4096, 0.5, 3)
	for _, bs := range []int{4096, 12288, 1 << 20, 8 << 20} {
		dst := t.TempDir() + "/out"
		opt := copyOpts(t, raw, dst)
		opt.BufferSize, opt.Buffers = bs, 2
		opt.Verify = true
		res := mustCopy(t, opt)
		cmpFiles(t, raw, dst, -1)
		if !res.Verified {
			t.Errorf("buffer %d: not verified", bs)
		}
	}
}

// TestExistingFileTarget: an existing file keeps its size (it plays a disk)
// and stale data where the image has zeros is cleared.
func TestExistingFileTarget(t *testing.T) {
	gpttest.Need(t, "cmp")
	dir := t.TempDir()
	raw := dir + "/img"
	makeImage(t, raw, 8<<20, 64<<10, 0.3, 5)
	dst := dir + "/disk"
	makeImage(t, dst, 12<<20, 64<<10, 1, 99) // full of stale random data
	res := mustCopy(t, copyOpts(t, raw, dst))
	cmpFiles(t, raw, dst, 8<<20)
	if fi, _ := os.Stat(dst); fi.Size() != 12<<20 {
		t.Errorf("target size %d, want it kept at %d", fi.Size(), 12<<20)
	}
	if res.ZeroBytes == 0 {
		t.Errorf("no zero regions handled")
	}
	// The part past the image is the disk's own, untouched.
	if got := gpttest.ReadAt(t, dst, 8<<20, 4096); zeros.Is(got) {
		t.Errorf("data past the image was cleared")
	}
}

func TestStdinSource(t *testing.T) {
	gpttest.Need(t, "cmp", "zstd")
	dir := t.TempDir()
	raw := dir + "/img"
	makeImage(t, raw, 3<<20, 4096, 0.7, 8)
	gpttest.Run(t, "zstd", "-q", raw, "-o", raw+".zst")
	f, err := os.Open(raw + ".zst")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A pipe, so the size is unknown as with a real stdin.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer pw.Close()
		b, _ := os.ReadFile(raw + ".zst")
		pw.Write(b)
	}()
	old := os.Stdin
	os.Stdin = pr
	defer func() { os.Stdin = old; pr.Close() }()
	dst := dir + "/out"
	res := mustCopy(t, copyOpts(t, "-", dst))
	cmpFiles(t, raw, dst, -1)
	if res.Compression != "zstd" {
		t.Errorf("compression %q", res.Compression)
	}
}

func TestBadCompressedInput(t *testing.T) {
	gpttest.Need(t, "gzip", "zstd", "xz")
	dir := t.TempDir()
	raw := dir + "/img"
	makeImage(t, raw, 4<<20, 4096, 1, 11)
	for _, c := range []struct{ name, cmd string }{
		{"gzip", "gzip -c " + raw},
		{"zstd", "zstd -q -c " + raw},
		{"xz", "xz -0 -c " + raw},
	} {
		out, err := exec.Command("sh", "-c", c.cmd).Output()
		if err != nil {
			t.Fatal(err)
		}
		cases := map[string][]byte{
			"truncated": out[:len(out)/2],
			"corrupt":   corrupt(out),
		}
		for what, data := range cases {
			t.Run(c.name+"/"+what, func(t *testing.T) {
				src := t.TempDir() + "/bad"
				if err := os.WriteFile(src, data, 0o644); err != nil {
					t.Fatal(err)
				}
				dst := t.TempDir() + "/out"
				_, err := Copy(context.Background(), copyOpts(t, src, dst))
				if err == nil {
					t.Fatalf("no error for a %s %s stream", what, c.name)
				}
				if !strings.Contains(err.Error(), c.name) {
					t.Errorf("error does not name the format: %v", err)
				}
				t.Logf("error (as expected): %v", err)
				// Nothing of the image's first MiB was written.
				if b, _ := os.ReadFile(dst); len(b) > 0 && !zeros.Is(b[:min(len(b), 1<<20)]) {
					t.Errorf("the image's start was written despite the failure")
				}
			})
		}
	}
}

// corrupt flips bytes in the middle of a compressed stream.
func corrupt(b []byte) []byte {
	c := append([]byte(nil), b...)
	for i := len(c) / 2; i < len(c)/2+64 && i < len(c); i++ {
		c[i] ^= 0x5a
	}
	return c
}

func TestChecksumOption(t *testing.T) {
	dir := t.TempDir()
	raw := dir + "/img"
	makeImage(t, raw, 2<<20, 4096, 1, 12)
	good := sha256sum(t, raw)
	opt := copyOpts(t, raw, dir+"/ok")
	opt.SHA256 = strings.ToUpper(good)
	mustCopy(t, opt)
	opt = copyOpts(t, raw, dir+"/bad")
	opt.SHA256 = strings.Repeat("ab", 32)
	_, err := Copy(context.Background(), opt)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("want ErrChecksum, got %v", err)
	}
	opt.SHA256 = "xyz"
	if _, err := Copy(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
		t.Errorf("bad -sha256 accepted: %v", err)
	}
}

func TestProgressPlain(t *testing.T) {
	dir := t.TempDir()
	raw := dir + "/img"
	makeImage(t, raw, 4<<20, 4096, 1, 13)
	var b strings.Builder
	opt := copyOpts(t, raw, dir+"/out")
	opt.Progress, opt.ProgressMode = &lockedWriter{w: &b}, ProgressPlain
	mustCopy(t, opt)
	out := b.String()
	if !strings.Contains(out, "restore: 4.0 MiB / 4.0 MiB (100%)") {
		t.Errorf("progress output %q lacks the final line", out)
	}
}

func TestOnProgress(t *testing.T) {
	dir := t.TempDir()
	raw := dir + "/img"
	makeImage(t, raw, 4<<20, 4096, 1, 13)
	var mu sync.Mutex
	var got []Progress
	opt := copyOpts(t, raw, dir+"/out")
	opt.ProgressInterval = time.Millisecond
	opt.Verify = true
	opt.OnProgress = func(p Progress) { mu.Lock(); got = append(got, p); mu.Unlock() }
	mustCopy(t, opt)
	mu.Lock()
	defer mu.Unlock()
	finals := map[string]Progress{}
	for i, p := range got {
		if p.Done < 0 || p.Rate < 0 || p.ETA < 0 || (p.Total > 0 && p.Done > p.Total) {
			t.Errorf("call %d: nonsense %+v", i, p)
		}
		if p.Final {
			finals[p.Phase] = p
		}
	}
	r, ok := finals["restore"]
	if !ok || r.Done != 4<<20 || r.Total != 4<<20 || r.ETA != 0 || r.Rate <= 0 {
		t.Errorf("final restore progress %+v (found %v), want 4 MiB of 4 MiB, ETA 0, a rate", r, ok)
	}
	if _, ok := finals["verify"]; !ok {
		t.Errorf("no final verify progress in %d calls", len(got))
	}
}

func TestMakeProgress(t *testing.T) {
	for _, c := range []struct {
		done, total int64
		el          time.Duration
		rate        float64
		eta         time.Duration
	}{
		{50, 100, 10 * time.Second, 5, 10 * time.Second},
		{100, 100, 10 * time.Second, 10, 0},
		{50, -1, 10 * time.Second, 5, 0},
		{0, 100, 10 * time.Second, 0, 0},
	} {
		p := makeProgress("restore", c.done, c.total, c.el, false)
		if p.Rate != c.rate || p.ETA != c.eta {
			t.Errorf("makeProgress(%d, %d, %s) = rate %v ETA %s, want %v %s", c.done, c.total, c.el, p.Rate, p.ETA, c.rate, c.eta)
		}
	}
}

// TestZstdLongWindow: zstd --long=29 (a 512 MiB window, over the old
// 256 MiB limit) restores; --long=30 fails with a message that names the
// window, imgcopy's limit and the flag, not "corrupt".
func TestZstdLongWindow(t *testing.T) {
	gpttest.Need(t, "zstd")
	dir := t.TempDir()
	raw := dir + "/img"
	makeImage(t, raw, 4<<20, 64<<10, 0.5, 6)
	for _, tc := range []struct {
		long int
		want string // "" = restores
	}{
		{29, ""},
		{30, "a window of 1.0 GiB exceeds the 512.0 MiB limit of imgcopy; recompress without --long=30"},
	} {
		t.Run(fmt.Sprint(tc.long), func(t *testing.T) {
			zst := fmt.Sprintf("%s/img.%d.zst", dir, tc.long)
			// Through a pipe: zstd does not know the size, the frame keeps its full window.
			shell(t, fmt.Sprintf("zstd -q -c --long=%d < %s > %s", tc.long, raw, zst))
			dst := t.TempDir() + "/out"
			_, err := Copy(context.Background(), copyOpts(t, zst, dst))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				cmpFiles(t, raw, dst, -1)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "corrupt") {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}
