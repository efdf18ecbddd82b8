package system

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
)

// TestImageTable reads the GPT at the start of images, plain and
// compressed (gzip, xz with several checks, zstd with and without a long
// window, by the Debian tools), from files and over HTTP, with 512- and
// 4096-byte sectors, and checks it against sfdisk's reading of the whole
// image.
func TestImageTable(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		version esxi.Version
		ss      int
	}{{"5.0", 512}, {"6.7", 4096}} {
		img := filepath.Join(dir, "esxi"+string(tc.version)+".img")
		if err := esxi.Create(img, esxi.CreateOptions{Version: tc.version, Size: 2 * gib, SectorSize: tc.ss, Seed: 4}); err != nil {
			t.Fatal(err)
		}
		used := 0
		if tc.ss == 512 {
			used = len(sfdiskParts(t, img))
		}
		// Only the image's start matters: compress its first MiB.
		head := img + ".head"
		tool(t, "sh", "-c", `head -c 1048576 "$1" > "$2"`, "sh", img, head)
		tool(t, "sh", "-c", `gzip -c "$1" > "$1.gz" && xz -k -c "$1" > "$1.xz" && zstd -q -c "$1" > "$1.zst" &&
			xz -k -c --check=sha256 "$1" > "$1.sha256.xz" && xz -k -c -0 --check=none "$1" > "$1.none.xz" &&
			zstd -q -c --long=27 --no-check "$1" > "$1.long.zst"`, "sh", head)
		srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
		defer srv.Close()
		url := srv.URL + "/" + filepath.Base(head)
		for _, src := range []string{img, head + ".gz", head + ".xz", head + ".zst", head + ".sha256.xz", head + ".none.xz", head + ".long.zst",
			srv.URL + "/" + filepath.Base(img), url + ".gz", url + ".xz", url + ".zst"} {
			tab, comp, err := ImageTable(context.Background(), src)
			if err != nil {
				t.Errorf("ImageTable(%s): %v", src, err)
				continue
			}
			wantComp := "none"
			for _, c := range []string{"gz:gzip", "xz:xz", "zst:zstd"} {
				ext, name, _ := strings.Cut(c, ":")
				if strings.HasSuffix(src, "."+ext) {
					wantComp = name
				}
			}
			if comp != wantComp || tab.SectorSize != tc.ss || tab.DiskSize != 2*gib {
				t.Errorf("ImageTable(%s) = %d-byte sectors, %d bytes, %s; want %d, %d, %s", src, tab.SectorSize, tab.DiskSize, comp, tc.ss, 2*gib, wantComp)
			}
			n := 0
			for _, s := range tab.Slots() {
				if s.Used() {
					n++
				}
			}
			if used != 0 && n != used {
				t.Errorf("ImageTable(%s): %d partitions, sfdisk sees %d", src, n, used)
			}
			if m := MinDiskSize(tab); m <= 0 || m > 2*gib {
				t.Errorf("MinDiskSize(%s) = %d", src, m)
			}
		}
	}
	// Not an image: a clear error.
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte(strings.Repeat("x", 70000)), 0o644)
	if _, _, err := ImageTable(context.Background(), junk); err == nil || !strings.Contains(err.Error(), "no GPT") {
		t.Errorf("ImageTable(junk) = %v, want a no-GPT error", err)
	}
	if _, _, err := ImageTable(context.Background(), "http://127.0.0.1:1/none"); err == nil {
		t.Error("ImageTable of an unreachable URL succeeded")
	}
}
