// Package report is imgcopy's output: the summary lines of a result, the
// -json document, the exit status an error gives, the -progress modes, and
// the scrubbing that keeps passwords and URL signatures off the terminal.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/remote/cred"
)

// Text writes the summary of a copy (or, madeBmap, of -make-bmap) to w;
// ok says the copy succeeded (the totals are printed only then).
func Text(w io.Writer, r *imaging.Result, ok, madeBmap bool) {
	switch {
	case ok && madeBmap:
		fmt.Fprintf(w, "read %d bytes in %v: %s in %d mapped ranges, %s zeros\n",
			r.Bytes, r.Duration.Round(time.Millisecond), MiB(r.DataBytes), r.BmapRanges, MiB(r.ZeroBytes))
	case ok:
		rate := float64(r.Bytes) / max(r.Duration.Seconds(), 1e-9)
		fmt.Fprintf(w, "copied %d bytes (%s data, %s zero regions) in %v, %.1f MiB/s\n",
			r.Bytes, MiB(r.DataBytes), MiB(r.ZeroBytes), r.Duration.Round(time.Millisecond), rate/(1<<20))
	}
	if d := r.Delta; d != nil {
		fmt.Fprintf(w, "delta: read %s of the target, %s identical (skipped), %s written\n",
			MiB(d.TargetRead), MiB(d.Identical), MiB(d.Written))
	}
	if r.SHA256 != "" {
		fmt.Fprintf(w, "SHA-256 %s\n", r.SHA256)
	}
	switch {
	case r.BmapPath != "" && r.SHA256From == "bmap":
		fmt.Fprintf(w, "SHA-256 %s claimed by the block map %s (not hashed; give -sha256 to check the bytes)\n", r.BmapSHA256, r.BmapPath)
		fmt.Fprintf(w, "  all %d mapped ranges matched their checksums, the rest of the image is zeros\n", r.BmapRanges)
	case r.BmapPath != "" && r.SHA256From == "stream":
		fmt.Fprintf(w, "block map %s: all %d mapped ranges matched their checksums, the rest of the image is zeros\n", r.BmapPath, r.BmapRanges)
	case r.BmapPath != "":
		fmt.Fprintf(w, "block map %s written (%d ranges)\n", r.BmapPath, r.BmapRanges)
	}
	if r.Verified {
		fmt.Fprintln(w, "verified: read back and matched")
	}
	if r.GPTFixup != "" {
		fmt.Fprintln(w, r.GPTFixup)
	}
	if r.TableUndoPath != "" {
		fmt.Fprintf(w, "the target's previous partition table is saved in %s\n", r.TableUndoPath)
	}
	for _, b := range r.BadRanges {
		fmt.Fprintf(w, "bad range: bytes %d-%d (%d bytes) filled with zeros\n", b.Start, b.Start+b.Length-1, b.Length)
	}
	if r.LayoutPath != "" {
		fmt.Fprintf(w, "layout %s\n", r.LayoutPath)
	}
	if r.ManifestPath != "" {
		fmt.Fprintf(w, "manifest %s\n", r.ManifestPath)
	}
	for _, s := range r.Signatures {
		fmt.Fprintf(w, "signature %s\n", s)
	}
}

// JSON writes the result (an empty one when r is nil) and err's text,
// scrubbed, as an indented JSON document.
func JSON(w io.Writer, r *imaging.Result, err error) error {
	out := struct {
		*imaging.Result
		Error string `json:",omitempty"`
	}{Result: r}
	if err != nil {
		out.Error = cred.Scrub(err.Error())
	}
	if out.Result == nil {
		out.Result = &imaging.Result{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// Error writes err as imgcopy's one error line, scrubbed.
func Error(w io.Writer, err error) {
	fmt.Fprintf(w, "imgcopy: %s\n", cred.Scrub(err.Error()))
}

// ExitCode is imgcopy's exit status for the error a copy returned: 0
// none, 1 a checksum, signature or verification mismatch, 2 anything else.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, imaging.ErrChecksum) || errors.Is(err, imaging.ErrVerify) || errors.Is(err, imaging.ErrSignature):
		return 1
	}
	return 2
}

// ProgressMode is the display the -progress flag names; auto is a bar on a
// terminal, none elsewhere.
func ProgressMode(name string, terminal bool) (imaging.ProgressMode, error) {
	switch name {
	case "auto":
		if terminal {
			return imaging.ProgressBar, nil
		}
		return imaging.ProgressNone, nil
	case "bar":
		return imaging.ProgressBar, nil
	case "plain":
		return imaging.ProgressPlain, nil
	case "none":
		return imaging.ProgressNone, nil
	}
	return imaging.ProgressNone, fmt.Errorf("-progress %q: use auto, bar, plain or none", name)
}

// Scrub returns a writer passing each write through cred.Scrub. Writes
// are whole lines or progress updates, so a secret is never split
// between two.
func Scrub(w io.Writer) io.Writer { return &scrubWriter{w: w} }

type scrubWriter struct{ w io.Writer }

func (s *scrubWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(s.w, cred.Scrub(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// MiB formats n bytes in MiB with one decimal.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
