package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/imaging"
)

func TestText(t *testing.T) {
	for _, tc := range []struct {
		name         string
		r            imaging.Result
		ok, madeBmap bool
		want         string
	}{
		{"copy", imaging.Result{Bytes: 3 << 20, DataBytes: 2 << 20, ZeroBytes: 1 << 20, Duration: 1500 * time.Millisecond, SHA256: "ab12"}, true, false,
			"copied 3145728 bytes (2.0 MiB data, 1.0 MiB zero regions) in 1.5s, 2.0 MiB/s\nSHA-256 ab12\n"},
		{"failed copy: no totals", imaging.Result{Bytes: 5, SHA256: "ab12"}, false, false, "SHA-256 ab12\n"},
		{"make-bmap", imaging.Result{Bytes: 4096, DataBytes: 1 << 20, ZeroBytes: 3 << 20, BmapRanges: 2, Duration: 2 * time.Second, BmapPath: "i.bmap"}, true, true,
			"read 4096 bytes in 2s: 1.0 MiB in 2 mapped ranges, 3.0 MiB zeros\nblock map i.bmap written (2 ranges)\n"},
		{"sha from the map", imaging.Result{BmapPath: "i.bmap", SHA256From: "bmap", BmapSHA256: "cd34", BmapRanges: 3}, false, false,
			"SHA-256 cd34 claimed by the block map i.bmap (not hashed; give -sha256 to check the bytes)\n  all 3 mapped ranges matched their checksums, the rest of the image is zeros\n"},
		{"sha from the stream, with a map", imaging.Result{SHA256: "ab12", BmapPath: "i.bmap", SHA256From: "stream", BmapRanges: 1}, false, false,
			"SHA-256 ab12\nblock map i.bmap: all 1 mapped ranges matched their checksums, the rest of the image is zeros\n"},
		{"delta", imaging.Result{Delta: &imaging.DeltaStats{TargetRead: 4 << 20, Identical: 3 << 20, Written: 1 << 20}}, false, false,
			"delta: read 4.0 MiB of the target, 3.0 MiB identical (skipped), 1.0 MiB written\n"},
		{"verified, fix-up, undo, bad ranges", imaging.Result{Verified: true, GPTFixup: "backup GPT moved", TableUndoPath: "/tmp/u.json",
			BadRanges: []imaging.Range{{Start: 512, Length: 1024}}}, false, false,
			"verified: read back and matched\nbackup GPT moved\nthe target's previous partition table is saved in /tmp/u.json\nbad range: bytes 512-1535 (1024 bytes) filled with zeros\n"},
		{"backup companions", imaging.Result{LayoutPath: "b.gpt.json", ManifestPath: "b.sha256", Signatures: []string{"b.sha256.minisig", "b.bmap.minisig"}}, false, false,
			"layout b.gpt.json\nmanifest b.sha256\nsignature b.sha256.minisig\nsignature b.bmap.minisig\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			Text(&b, &tc.r, tc.ok, tc.madeBmap)
			if b.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	for _, tc := range []struct {
		name     string
		r        *imaging.Result
		err      error
		inOut    []string
		notInOut []string
	}{
		{"result", &imaging.Result{Bytes: 7, SHA256: "ab12"}, nil, []string{`"Bytes": 7`, `"SHA256": "ab12"`}, []string{`"Error"`}},
		{"no result, error scrubbed", nil, errors.New("smb://bob:hunter2@nas/x: refused"), []string{`"Error": "smb://bob:***@nas/x: refused"`, `"Bytes": 0`}, []string{"hunter2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := JSON(&b, tc.r, tc.err); err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := json.Unmarshal(b.Bytes(), &v); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, b.String())
			}
			for _, s := range tc.inOut {
				if !strings.Contains(b.String(), s) {
					t.Errorf("%q missing from\n%s", s, b.String())
				}
			}
			for _, s := range tc.notInOut {
				if strings.Contains(b.String(), s) {
					t.Errorf("%q in\n%s", s, b.String())
				}
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{fmt.Errorf("x: %w", imaging.ErrChecksum), 1},
		{fmt.Errorf("x: %w", imaging.ErrVerify), 1},
		{fmt.Errorf("x: %w", imaging.ErrSignature), 1},
		{fmt.Errorf("x: %w", imaging.ErrRefused), 2},
		{errors.New("read error"), 2},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestProgressMode(t *testing.T) {
	for _, tc := range []struct {
		name     string
		terminal bool
		want     imaging.ProgressMode
		err      string
	}{
		{"auto", true, imaging.ProgressBar, ""},
		{"auto", false, imaging.ProgressNone, ""},
		{"bar", false, imaging.ProgressBar, ""},
		{"plain", true, imaging.ProgressPlain, ""},
		{"none", true, imaging.ProgressNone, ""},
		{"fancy", true, imaging.ProgressNone, `-progress "fancy": use auto, bar, plain or none`},
	} {
		got, err := ProgressMode(tc.name, tc.terminal)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("ProgressMode(%q, %v) = %v, %v; want %v, %q", tc.name, tc.terminal, got, err, tc.want, tc.err)
		}
	}
}

func TestScrubAndError(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain line\n", "plain line\n"},
		{"GET sftp://alice:s3cret@host/img\n", "GET sftp://alice:***@host/img\n"},
		{"https://s3/x?X-Amz-Signature=abcdef&y=1\n", "https://s3/x?X-Amz-Signature=***&y=1\n"},
	} {
		var b bytes.Buffer
		if n, err := Scrub(&b).Write([]byte(tc.in)); n != len(tc.in) || err != nil || b.String() != tc.want {
			t.Errorf("Scrub(%q) wrote %q (%d, %v), want %q", tc.in, b.String(), n, err, tc.want)
		}
	}
	var b bytes.Buffer
	Error(&b, errors.New("nfs://u:pw@h/x: gone"))
	if b.String() != "imgcopy: nfs://u:***@h/x: gone\n" {
		t.Errorf("Error wrote %q", b.String())
	}
	if got := MiB(3<<20 + 1<<19); got != "3.5 MiB" {
		t.Errorf("MiB = %q", got)
	}
}
