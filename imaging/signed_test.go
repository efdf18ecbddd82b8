package imaging

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/imgsig"
	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// minisignKeys makes an unencrypted key pair with the stock minisign tool.
func minisignKeys(t *testing.T, dir, name string) (pub, sec string) {
	t.Helper()
	gpttest.Need(t, "minisign")
	pub, sec = filepath.Join(dir, name+".pub"), filepath.Join(dir, name+".key")
	gpttest.Run(t, "minisign", "-G", "-W", "-p", pub, "-s", sec)
	return pub, sec
}

// TestSignedRestore: a backup signed with -sign KEY restores with -pubkey;
// a missing signature, another key, a tampered manifest, an unsigned block
// map each stop the restore with ErrSignature naming the file, and leave
// every byte of the target (with its partition table) as it was.
func TestSignedRestore(t *testing.T) {
	gpttest.Need(t, "sgdisk", "minisign", "cmp")
	dir := t.TempDir()
	pub, sec := minisignKeys(t, dir, "good")
	otherPub, _ := minisignKeys(t, dir, "other")
	raw := sgdiskImage(t, dir, 64<<20, testParts)
	img := filepath.Join(dir, "esxi.img.zst")
	opt := copyOpts(t, raw, img)
	opt.Compress, opt.SignKey = "zstd", sec
	res := mustCopy(t, opt)
	if len(res.Signatures) != 2 {
		t.Fatalf("backup signatures %v", res.Signatures)
	}
	manifest, bm := img+".sha256", img+".bmap"
	// The stock tool verifies ours.
	for _, f := range []string{manifest, bm} {
		gpttest.Run(t, "minisign", "-V", "-p", pub, "-m", f)
	}
	goodManifest, _ := os.ReadFile(manifest)
	goodSig, _ := os.ReadFile(manifest + imgsig.Ext)
	goodBmap, _ := os.ReadFile(bm)

	dst := sgdiskImage(t, dir, 96<<20, []gpttest.Part{{Slot: 1, First: 2048, Last: 150000, Type: "8300"}})
	before, _ := os.ReadFile(dst)
	restore := func(key string, mutate func()) (*Result, error) {
		t.Helper()
		os.WriteFile(manifest, goodManifest, 0o644)
		os.WriteFile(manifest+imgsig.Ext, goodSig, 0o644)
		os.WriteFile(bm, goodBmap, 0o644)
		gpttest.Run(t, "minisign", "-S", "-s", sec, "-m", bm) // fresh, by the stock tool
		if mutate != nil {
			mutate()
		}
		o := copyOpts(t, img, dst)
		o.PubKey, o.Yes, o.UndoPath = key, true, filepath.Join(t.TempDir(), "undo.json")
		return Copy(context.Background(), o)
	}
	for _, tc := range []struct {
		name   string
		key    string
		mutate func()
		kind   error
		msg    string
	}{
		{"missing manifest signature", pub, func() { os.Remove(manifest + imgsig.Ext) }, imgsig.ErrMissing,
			"esxi.img.zst.sha256 is not signed: no signature " + manifest + ".minisig"},
		{"wrong key", otherPub, nil, imgsig.ErrWrongKey, manifest + " was signed by key "},
		{"tampered manifest", pub, func() {
			os.WriteFile(manifest, bytes.Replace(goodManifest, goodManifest[:8], []byte("00000000"), 1), 0o644)
		}, imgsig.ErrBad, manifest + " does not match its signature " + manifest + ".minisig"},
		{"unsigned block map", pub, func() { os.Remove(bm + imgsig.Ext) }, imgsig.ErrMissing, bm + " is not signed"},
		{"no manifest, unsigned block map", pub, func() { os.Remove(manifest); os.Remove(bm + imgsig.Ext) }, imgsig.ErrMissing, bm + " is not signed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := restore(tc.key, tc.mutate)
			if !errors.Is(err, ErrSignature) || !errors.Is(err, tc.kind) {
				t.Fatalf("want ErrSignature/%v, got %v", tc.kind, err)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "nothing was written") {
				t.Errorf("message %q lacks %q", err, tc.msg)
			}
			t.Logf("refused as expected: %v", err)
			if after, _ := os.ReadFile(dst); !bytes.Equal(after, before) {
				t.Fatalf("the target changed")
			}
		})
	}
	// A signed manifest whose SHA-256 the image does not have (a manifest
	// signed for another image): ErrChecksum, the target's table
	// invalidated (no tool takes the disk for a good one) and its undo
	// file puts it back.
	t.Run("signed manifest of another image", func(t *testing.T) {
		res, err := restore(pub, func() {
			other := bytes.Replace(goodManifest, []byte(res.SHA256), []byte(strings.Repeat("5", 64)), 1)
			os.WriteFile(manifest, other, 0o644)
			gpttest.Run(t, "minisign", "-S", "-s", sec, "-m", manifest)
			os.Remove(bm) // the map would already disagree
			os.Remove(bm + imgsig.Ext)
		})
		if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "partition table was not written") {
			t.Fatalf("want ErrChecksum, got %v", err)
		}
		if st := readState(t, dst); st.valid() {
			t.Fatalf("the target still shows a valid GPT after the failed restore")
		}
		if err := applyUndo(t, dst, res.TableUndoPath); err != nil {
			t.Fatal(err)
		}
		after, _ := os.ReadFile(dst)
		if !sameRegions(after, before, tableRegions(int64(len(before)))) {
			t.Fatalf("the undo file did not put the target's GPT back")
		}
	})
	// Good: ours (backup), the stock tool's signatures, the map alone.
	for _, tc := range []struct {
		name   string
		mutate func()
	}{
		{"signed by imgcopy", nil},
		{"manifest signed by minisign", func() { gpttest.Run(t, "minisign", "-S", "-s", sec, "-m", manifest) }},
		{"signed block map only", func() { os.Remove(manifest); os.Remove(manifest + imgsig.Ext) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(dst, before, 0o644)
			r, err := restore(pub, tc.mutate)
			if err != nil {
				t.Fatal(err)
			}
			if r.SHA256 != res.SHA256 {
				t.Errorf("sha256 %s, backup %s", r.SHA256, res.SHA256)
			}
			// The partitions (the GPT was adapted to the bigger target).
			if out, err := exec.Command("cmp", "-i", "1048576", "-n", "50000000", raw, dst).CombinedOutput(); err != nil {
				t.Errorf("cmp: %v %s", err, out)
			}
		})
	}
}

// TestSignedRestoreHTTP: over HTTP the manifest and signature are
// fetched next to the image URL; a 404 signature is "not signed".
func TestSignedRestoreHTTP(t *testing.T) {
	gpttest.Need(t, "sgdisk", "minisign")
	dir := t.TempDir()
	pub, sec := minisignKeys(t, dir, "k")
	raw := sgdiskImage(t, dir, 64<<20, testParts)
	img := filepath.Join(dir, "web", "esxi.img.zst")
	os.Mkdir(filepath.Dir(img), 0o755)
	opt := copyOpts(t, raw, img)
	opt.Compress, opt.SignKey = "zstd", sec
	mustCopy(t, opt)
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(img))))
	defer srv.Close()
	o := copyOpts(t, srv.URL+"/esxi.img.zst", filepath.Join(dir, "out.img"))
	o.PubKey = pub
	if _, err := Copy(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	os.Remove(img + ".sha256.minisig")
	o.Dst = filepath.Join(dir, "out2.img")
	_, err := Copy(context.Background(), o)
	if !errors.Is(err, imgsig.ErrMissing) || !strings.Contains(err.Error(), srv.URL+"/esxi.img.zst.sha256 is not signed") {
		t.Fatalf("want not signed, got %v", err)
	}
	if _, err := os.Stat(o.Dst); err == nil {
		t.Errorf("a failed restore left %s", o.Dst)
	}
}
