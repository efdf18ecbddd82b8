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
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/esxi-rescue/rescue/cmds/imgcopy/report"
	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/remote/cred"
	"golang.org/x/sys/unix"
)

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
			report.Error(stderr, err)
			return 2
		}
		opt.Cred = c
	}
	// Whatever is printed passes the scrubber: no password or signature
	// of a URL or a credentials file reaches the terminal.
	stdout, stderr = report.Scrub(stdout), report.Scrub(stderr)
	if *refuse != "" {
		opt.Refuse = strings.Split(*refuse, ",")
	}
	opt.ProgressInterval = *interval
	mode, err := report.ProgressMode(*progress, isTerminal(os.Stderr))
	if err != nil {
		report.Error(stderr, err)
		return 2
	}
	opt.ProgressMode, opt.Progress = mode, stderr
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
		report.JSON(stdout, res, err)
	} else if res != nil {
		report.Text(stdout, res, err == nil, *makeBmap)
	}
	if err != nil {
		report.Error(stderr, err)
	}
	return report.ExitCode(err)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
