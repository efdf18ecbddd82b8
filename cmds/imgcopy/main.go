// imgcopy restores a disk image onto a disk (or file), or backs a disk up
// into an image, fast and verified, keeping an ESXi-style GPT slot-exact.
//
// Synopsis:
//
//	imgcopy [flags] SRC DST
//
// SRC is a file, a block device, "-" (stdin), an http(s) URL or a share
// URL (smb://, nfs://, sftp://, s3://), resumed after dropped connections;
// gzip, zstd and xz images are recognised by their magic bytes. DST is a
// block device or a file. With -compress the copy is a backup: DST is an
// image file or a share URL, written with a GPT layout file
// (DST.gpt.json), a SHA-256 manifest (DST.sha256) and a block map
// (DST.bmap, bmaptool's format plus the image's SHA-256) next to it; on a
// share all of them appear only when complete.
// With -make-bmap, imgcopy writes the block map of an existing image.
//
// With -sign a backup signs its manifest and block map (minisign format);
// with -pubkey a restore requires those signatures before it writes.
//
// Exit status: 0 success, 1 checksum, signature or verification mismatch, 2 any
// other trouble (refused target, read/write error, network error).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/remote/cred"
	"golang.org/x/sys/unix"
)

const usage = `Usage: imgcopy [flags] SRC DST
       imgcopy -make-bmap [flags] IMAGE [BMAP]

Restore a disk image onto a disk, or back a disk up into an image.

SRC  an image file, a block device, - (stdin), an http:// / https:// URL
     (a dropped connection is resumed with a Range request; no answer in
     -connect-timeout or under 64 KiB in -idle-timeout counts as dropped;
     -retries bounds the attempts), or a share:
       smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH    SMB 2/3
       nfs://HOST[:PORT]/EXPORT/PATH                 NFS v4/v3 (kernel client)
       sftp://USER@HOST[:PORT]/PATH[?hostkey=SHA256:...]   (also ssh://)
       s3://BUCKET/KEY?endpoint=https://HOST&region=R[&style=path|virtual]
     (resumed from the byte reached after a dropped connection). gzip, zstd
     and xz images are decompressed on the fly (recognised by their magic bytes).
DST  a block device or a file. A new or empty file is created with holes
     where the image has zeros; an existing file or a disk keeps its size.
     A backup (-compress) may also go to a share URL as above.

Restoring refuses a DST that is mounted (or has a mounted partition), held
by another program (gptfix, imgcopy: O_EXCL and flock), read-only, holds
the running system, is the source (also through a loop device), or is
smaller than the image's last partition; and, unless -yes, one that holds
a partition table (a disk or an image file), a filesystem, LVM, md, VMFS,
swap or ISO signature, or is a partition rather than a whole disk (what is
on it is printed first; writing into a partition is warned about loudly).
Before writing, the target's partition table is saved to an undo file
(next to -undo, *.before-restore.json) and invalidated; the image's
partition tables are written last, only when the whole image arrived and
matched -sha256. A failed or killed restore so leaves a disk that no tool
takes for a good one: restart the restore, or gptfix -undo FILE -yes DST.
With -delta (a disk that already holds an older copy of the image) the
target is read alongside the image and only the 64 KiB blocks that differ
are written (zeros only where the target is not zero); the checks and the
order of writes stay the same.
A new file DST is written as DST.partial and renamed when complete. On a larger (or smaller) disk the backup GPT is moved
to the disk's end, keeping every partition entry in its slot.

Block maps: a restore uses the image's block map (bmaptool's .bmap format;
-bmap FILE|URL, or found next to a local image as IMAGE.bmap, the name
without .zst/.gz/.xz plus .bmap, ...). It then reads only the mapped ranges
of a sparse image file, checks each range's checksum and that everything
else is zero. Without -sha256 it reports the SHA-256 the map claims
(imgcopy's maps record it) instead of hashing gigabytes of zeros; -sha256
is always checked against a hash of the bytes restored, never against
the (unkeyed) map. A map that does not fit the image stops the restore
like a wrong -sha256. -no-bmap ignores maps.
-make-bmap writes an image's map (default IMAGE.bmap); bmaptool can use it.

Signed images (minisign format; the stock minisign tool makes keys and
checks signatures: minisign -G -W -p esxi.pub -s esxi.key): a backup with
-sign KEY writes DST.sha256.minisig and DST.bmap.minisig. A restore with
-pubkey PUB first checks the signature of the image's manifest (SRC.sha256,
or -manifest) and of the block map it uses; a missing or wrong signature, or
a signature by another key, stops it before anything is written and names
the file. The signed manifest's SHA-256 must then match the restored bytes.

Backing up (-compress zstd|gzip|none) writes DST plus DST.gpt.json (GPT
layout), DST.sha256 (sha256sum manifest: the file's hash, checked by
sha256sum -c in its directory, and in a comment line the hash of the
uncompressed image, for -sha256) and DST.bmap (block map of the
uncompressed image), all under temporary names renamed into place at the
end: a failed or killed backup leaves an older backup set as it was.
On a share (smb://, nfs://, sftp://, s3://) the temporary names are
.NAME.partial beside each file (S3: multipart uploads, completed only at
the end, aborted on failure); a killed backup leaves only hidden .partial
files. An existing image is refused without -yes.

Credentials for shares never go on the command line: -cred FILE names a
file of key=value lines: user=, password=, domain= (SMB), ssh_key=PATH and
known_hosts=PATH (SFTP; the server's host key must be in a known_hosts file
or given as ?hostkey=), s3_access_key=, s3_secret_key= (S3; else the AWS_*
variables and ~/.aws/credentials). Passwords are never printed.

Exit status: 0 done, 1 checksum, signature or verification mismatch, 2 other trouble.

Examples:
  imgcopy -sha256 3a7b... http://10.0.0.1/esxi.img.zst /dev/sda
  imgcopy -verify esxi.img /dev/sdb
  imgcopy -delta -yes esxi.img.zst /dev/sdb  # writes only what changed since the last restore
  imgcopy -compress zstd /dev/sda /mnt/backup/esxi.img.zst
  imgcopy -make-bmap esxi.img            # writes esxi.img.bmap
  imgcopy -cred /mnt/nas.cred smb://nas/images/esxi.img.zst /dev/sda
  imgcopy -compress zstd /dev/sda s3://backups/esxi.img.zst?endpoint=https://minio:9000
  imgcopy -compress zstd -cred ssh.cred /dev/sda sftp://backup@nas/srv/images/esxi.img.zst
  imgcopy -compress zstd -sign esxi.key /dev/sda esxi.img.zst
  imgcopy -pubkey esxi.pub http://10.0.0.1/esxi.img.zst /dev/sda

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("imgcopy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opt      imaging.Options
		progress = fs.String("progress", "auto", "progress display: auto (a bar on a terminal, else none), bar, plain (a line every few seconds), none")
		interval = fs.Duration("progress-interval", 5*time.Second, "period of -progress=plain lines")
		jsonOut  = fs.Bool("json", false, "print the result as JSON on stdout")
		refuse   = fs.String("refuse", "", "comma-separated extra devices never to write (e.g. the boot medium)")
		quiet    = fs.Bool("q", false, "no log lines on stderr (errors are still printed)")
		makeBmap = fs.Bool("make-bmap", false, "write the block map of IMAGE to BMAP (default IMAGE.bmap) instead of copying")
		credFile = fs.String("cred", "", "credentials file for smb://, sftp://, s3:// (key=value lines: user, password, domain, ssh_key, known_hosts, s3_access_key, s3_secret_key)")
	)
	fs.DurationVar(&opt.ConnectTimeout, "connect-timeout", 10*time.Second, "bound on each connection attempt to a share, and on each HTTP request up to its response headers")
	fs.DurationVar(&opt.IdleTimeout, "idle-timeout", 30*time.Second, "an HTTP download receiving less than 64 KiB in this long counts as dropped (resumed, retried)")
	fs.StringVar(&opt.Bmap, "bmap", "", "the image's block map (file or URL; default: IMAGE.bmap etc. next to a local image)")
	fs.BoolVar(&opt.NoBmap, "no-bmap", false, "ignore block maps: read and hash the whole image")
	fs.StringVar(&opt.SHA256, "sha256", "", "expected SHA-256 (hex) of the uncompressed image; checked before the partition table is written")
	fs.StringVar(&opt.PubKey, "pubkey", "", "trusted minisign public key (a .pub file or its base64 line): the image's manifest (and block map) must be signed by it")
	fs.StringVar(&opt.Manifest, "manifest", "", "the image's sha256sum manifest (file or URL; default with -pubkey: SRC.sha256); its SHA-256 is required")
	fs.StringVar(&opt.SignKey, "sign", "", "back up: sign the manifest and block map with this minisign secret key (writes DST.sha256.minisig, DST.bmap.minisig)")
	fs.StringVar(&opt.SignPasswordFile, "sign-password-file", "", "file whose first line is the password of an encrypted -sign key")
	fs.BoolVar(&opt.Verify, "verify", false, "read back what was written from the medium (O_DIRECT, not the page cache), while writing, and compare (per-64MiB digests; zero regions must read as zeros)")
	fs.BoolVar(&opt.Yes, "yes", false, "overwrite a disk that holds a partition table (or an existing backup file)")
	fs.BoolVar(&opt.NoGPTFixup, "no-gpt-fixup", false, "leave the GPT exactly as in the image, even on a disk of another size")
	fs.BoolVar(&opt.Delta, "delta", false, "restore onto a disk that holds an older copy: read it alongside the image and write only the 64 KiB blocks that differ")
	fs.BoolVar(&opt.AssumeZeroed, "assume-zeroed", false, "the target disk was just zeroed/discarded: skip the image's zero regions instead of zeroing them")
	fs.BoolVar(&opt.SkipBad, "skip-bad", false, "on read errors of the source, fill unreadable sectors with zeros, continue, and list them")
	fs.StringVar(&opt.Compress, "compress", "", "back up: write DST compressed with zstd, gzip or none, plus layout and manifest files")
	fs.IntVar(&opt.SectorSize, "sector-size", 0, "the image's sector size, 512 or 4096 (default: detected)")
	fs.StringVar(&opt.UndoPath, "undo", "", "file for the GPT fix-up's undo copy (default: in $TMPDIR)")
	fs.IntVar(&opt.Retries, "retries", 5, "HTTP retries after errors and dropped connections (0: none, a dropped download is not resumed)")
	fs.IntVar(&opt.HTTPConns, "conns", 4, "read an http(s), s3:// or smb:// image in 2 MiB ranges, N at once (1-8; 1: one stream; http(s) needs a server with ranges and an ETag or Last-Modified; smb: N sessions, READs in flight on each)")
	fs.IntVar(&opt.HTTPConns, "http-conns", 4, "the same as -conns (its older name)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case opt.Retries < 0:
		fmt.Fprintf(stderr, "imgcopy: -retries %d: want 0 (none) or more\n", opt.Retries)
		return 2
	case opt.Retries == 0:
		opt.Retries = imaging.NoRetries // imaging takes 0 for its default
	}
	if opt.HTTPConns < 1 || opt.HTTPConns > 8 {
		fmt.Fprintf(stderr, "imgcopy: -http-conns %d: want 1 to 8\n", opt.HTTPConns)
		return 2
	}
	switch {
	case *makeBmap && (fs.NArg() == 1 || fs.NArg() == 2):
		opt.Src, opt.Dst = fs.Arg(0), fs.Arg(1)
	case !*makeBmap && fs.NArg() == 2:
		opt.Src, opt.Dst = fs.Arg(0), fs.Arg(1)
	default:
		fs.Usage()
		return 2
	}
	if *credFile != "" {
		c, err := cred.Load(*credFile)
		if err != nil {
			fmt.Fprintf(stderr, "imgcopy: %s\n", cred.Scrub(err.Error()))
			return 2
		}
		opt.Cred = c
	}
	// Whatever is printed passes the scrubber: no password or signature
	// of a URL or a credentials file reaches the terminal.
	stdout, stderr = &scrubWriter{w: stdout}, &scrubWriter{w: stderr}
	if *refuse != "" {
		opt.Refuse = strings.Split(*refuse, ",")
	}
	opt.ProgressInterval = *interval
	switch *progress {
	case "auto":
		if isTerminal(os.Stderr) {
			opt.ProgressMode = imaging.ProgressBar
		}
	case "bar":
		opt.ProgressMode = imaging.ProgressBar
	case "plain":
		opt.ProgressMode = imaging.ProgressPlain
	case "none":
	default:
		fmt.Fprintf(stderr, "imgcopy: -progress %q: use auto, bar, plain or none\n", *progress)
		return 2
	}
	opt.Progress = stderr
	if !*quiet {
		opt.Log = func(format string, a ...any) { fmt.Fprintf(stderr, "imgcopy: "+format+"\n", a...) }
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	copyFn := imaging.Copy
	if *makeBmap {
		copyFn = imaging.MakeBmap
	}
	res, err := copyFn(ctx, opt)
	if *jsonOut {
		out := struct {
			*imaging.Result
			Error string `json:",omitempty"`
		}{Result: res}
		if err != nil {
			out.Error = cred.Scrub(err.Error())
		}
		if out.Result == nil {
			out.Result = &imaging.Result{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else if res != nil {
		report(stdout, res, err == nil, *makeBmap)
	}
	if err != nil {
		fmt.Fprintf(stderr, "imgcopy: %s\n", cred.Scrub(err.Error()))
		if errors.Is(err, imaging.ErrChecksum) || errors.Is(err, imaging.ErrVerify) || errors.Is(err, imaging.ErrSignature) {
			return 1
		}
		return 2
	}
	return 0
}

func report(w io.Writer, r *imaging.Result, ok, madeBmap bool) {
	switch {
	case ok && madeBmap:
		fmt.Fprintf(w, "read %d bytes in %v: %s in %d mapped ranges, %s zeros\n",
			r.Bytes, r.Duration.Round(time.Millisecond), mib(r.DataBytes), r.BmapRanges, mib(r.ZeroBytes))
	case ok:
		rate := float64(r.Bytes) / max(r.Duration.Seconds(), 1e-9)
		fmt.Fprintf(w, "copied %d bytes (%s data, %s zero regions) in %v, %.1f MiB/s\n",
			r.Bytes, mib(r.DataBytes), mib(r.ZeroBytes), r.Duration.Round(time.Millisecond), rate/(1<<20))
	}
	if d := r.Delta; d != nil {
		fmt.Fprintf(w, "delta: read %s of the target, %s identical (skipped), %s written\n",
			mib(d.TargetRead), mib(d.Identical), mib(d.Written))
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

// scrubWriter passes each write through cred.Scrub. Writes are whole
// lines or progress updates, so a secret is never split between two.
type scrubWriter struct{ w io.Writer }

func (s *scrubWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(s.w, cred.Scrub(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
