package qemutests

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/imaging"
)

// restoreImage is the image served over HTTP: ESXi 6.0 on a 1 GiB medium
// (system, both banks, core dump, store), restored onto a 2 GiB disk.
type restoreImage struct {
	img    *Image
	zst    string
	bmap   string // the image's block map (imgcopy -make-bmap)
	sha    string
	digest map[string]string
}

// checkRestored checks from the host a target the rescue restored ri
// onto: the image's GPT slot for slot with the backup at the target's end
// (CheckFixedGPT), sgdisk -v clean, every partition's data as in the image.
func (ri *restoreImage) checkRestored(t *testing.T, target string) {
	t.Helper()
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
}

func makeRestoreImage(t *testing.T, tl *Tools) *restoreImage {
	t.Helper()
	dir := t.TempDir()
	img, err := MakeImage(tl, filepath.Join(dir, "esxi-6.0.img"), "6.0", "1G", 512, "")
	if err != nil {
		t.Fatal(err)
	}
	r := &restoreImage{img: img, zst: filepath.Join(dir, "esxi-6.0.img.zst")}
	if r.sha, err = CompressZstd(img.Path, r.zst); err != nil {
		t.Fatal(err)
	}
	bm, err := imaging.MakeBmap(context.Background(), imaging.Options{Src: img.Path, Dst: r.zst + ".bmap"})
	if err != nil {
		t.Fatal(err)
	}
	if bm.SHA256 != r.sha {
		t.Fatalf("block map: SHA-256 %s, zstd's input hashed to %s", bm.SHA256, r.sha)
	}
	r.bmap = bm.BmapPath
	if r.digest, err = PartitionDigests(img.Path, 512); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRestoreHTTP is scenario 2: a hands-off restore of a zstd image over
// HTTP (QEMU user networking, restrict=on, the guest's 10.0.2.100:80
// forwarded to a loopback server), onto a blank bigger disk, fixed,
// verified, and booted: it must end in the stub kernel's line naming the
// image's primary boot bank. "cut" drops the download halfway (every
// request without a Range is cut there); the restore must resume with a
// Range request and succeed. "plain" also passes the image's block map
// (rescue.bmap=): every range is checked and the SHA-256 comes from it.
func TestRestoreHTTP(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()
	ri := makeRestoreImage(t, tl)
	st, err := os.Stat(ri.zst)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cut  int64
		bmap bool
	}{
		{"plain", 0, true},
		{"cut", st.Size() / 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, err := ServeFiles(map[string]string{"/img.zst": ri.zst, "/img.zst.bmap": ri.bmap})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			srv.CutAfter = tc.cut
			target := filepath.Join(t.TempDir(), "blank.img")
			if err := BlankDisk(target, 2<<30); err != nil {
				t.Fatal(err)
			}
			var bmapArg []string
			if tc.bmap {
				bmapArg = []string{"rescue.bmap=http://10.0.2.100/img.zst.bmap"}
			}
			r, m, err := HandsOff(context.Background(), VM{
				Name:   t.Name(),
				Kernel: a.Kernel, Initrd: a.Initramfs,
				Cmdline: KernelCmdline(append([]string{"ip=dhcp", "rescue.action=restore,fix,verify",
					"rescue.image=http://10.0.2.100/img.zst", "rescue.sha256=" + ri.sha,
					"rescue.target=auto", "rescue.done=boot"}, bmapArg...)...),
				Disks: []Disk{{Path: target}},
				Net:   &Net{Forwards: map[string]string{"10.0.2.100:80": srv.Addr}},
			}, reStub)
			if r != nil {
				defer r.Stop()
			}
			t.Logf("HTTP requests: %s", strings.Join(srv.Requests(), "; "))
			if err != nil {
				t.Fatal(err)
			}
			if tc.bmap && !strings.Contains(r.Output(), "ranges matched") {
				t.Errorf("the restore did not check the image against its block map (rescue.bmap=)")
			}
			if m[1] != ri.img.RightBank {
				t.Errorf("the stub kernel was booted from bank %s, want the image's primary bank %s", m[1], ri.img.RightBank)
			}
			if tc.cut > 0 {
				if srv.Cuts() == 0 {
					t.Errorf("the server never cut a connection (after %d bytes): the test proved nothing", tc.cut)
				}
				if srv.RangeRequests() == 0 {
					t.Errorf("no Range request after the cut: the download did not resume")
				}
			}
			r.Stop()
			ri.checkRestored(t, target)
		})
	}
}

// TestRefusals is scenario 5's refusals: the rescue system must stop and
// touch nothing when the target is ambiguous, and leave no valid-looking
// table when the image is not the one the checksum names.
func TestRefusals(t *testing.T) {
	a := artifacts(t)
	tl := tools(t, "esximg")
	missingRescue(t)
	t.Parallel()

	t.Run("two-candidates", func(t *testing.T) {
		t.Parallel()
		b, err := MakeBroken(tl, t.TempDir(), incidentDisk)
		if err != nil {
			t.Fatal(err)
		}
		second := b.Damaged + ".second"
		if err := CopySparse(b.Damaged, second); err != nil {
			t.Fatal(err)
		}
		disks := []string{b.Damaged, second}
		before := map[string]string{}
		for _, d := range disks {
			if before[d], err = FileDigest(d); err != nil {
				t.Fatal(err)
			}
		}
		r := boot(t, "", VM{
			Kernel: a.Kernel, Initrd: a.Initramfs,
			Cmdline: KernelCmdline("rescue.action=fix", "rescue.ref=esxi", "rescue.target=auto", "rescue.done=poweroff"),
			Disks:   []Disk{{Path: disks[0]}, {Path: disks[1]}},
			Timeout: Scaled(DefaultHandsOff),
		})
		m, err := r.Expect(MarkFailed, 0, MarkDone)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("refused: %s", m[0])
		r.Stop()
		for _, d := range disks {
			after, err := FileDigest(d)
			if err != nil {
				t.Fatal(err)
			}
			if after != before[d] {
				t.Errorf("%s changed although the rescue system refused to choose", d)
			}
		}
	})

	t.Run("wrong-sha256", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		ri := makeRestoreImage(t, tl)
		// The target is the broken server's disk: the same ESXi, damaged.
		target := filepath.Join(dir, "target.img")
		if _, err := tl.Run("esximg", "damage", "-mode", "windows", "-size", "2G", ri.img.Path, target); err != nil {
			t.Fatal(err)
		}
		if tb, err := gpt.ReadFile(target, 512); err != nil || tb.Best() == nil {
			t.Fatalf("fixture: the target should hold a GPT: %v", err)
		}
		srv, err := ServeFiles(map[string]string{"/img.zst": ri.zst})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		wrong := strings.Repeat("0", 64)
		r := boot(t, "", VM{
			Kernel: a.Kernel, Initrd: a.Initramfs,
			Cmdline: KernelCmdline("ip=dhcp", "rescue.action=restore,fix,verify",
				"rescue.image=http://10.0.2.100/img.zst", "rescue.sha256="+wrong,
				"rescue.target=auto", "rescue.done=poweroff"),
			Disks:   []Disk{{Path: target}},
			Net:     &Net{Forwards: map[string]string{"10.0.2.100:80": srv.Addr}},
			Timeout: Scaled(DefaultHandsOff),
		})
		m, err := r.Expect(MarkFailed, 0, MarkDone)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("failed as it should: %s", m[0])
		if !regexp.MustCompile(`(?i)sha|checksum`).MatchString(m[0]) {
			t.Errorf("the failure does not name the checksum: %q", m[0])
		}
		out := r.Output()
		r.Stop()
		// The restore had begun writing when the checksum turned out
		// wrong: the target's table was saved to an undo file and
		// invalidated first, so the half-written disk looks good to no
		// tool (imaging's contract), and the failure says how to get back.
		tb, err := gpt.ReadFile(target, 512)
		if err != nil {
			t.Fatal(err)
		}
		if tb.Best() != nil {
			t.Errorf("the target still shows a valid GPT although the image's checksum was wrong and its data was overwritten")
		}
		if !strings.Contains(out, "gptfix -undo") {
			t.Errorf("the failure does not say how to put the old table back")
		}
	})
}
