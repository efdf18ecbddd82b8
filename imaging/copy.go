// Package imaging copies whole-disk images: it restores an image (a file, a
// block device, stdin or an http(s) URL, optionally gzip-, zstd- or
// xz-compressed) onto a disk or a file, and backs a disk up into a
// (compressed) image file with a GPT layout file and a SHA-256 manifest.
//
// A restore runs as a pipeline with bounded memory: one goroutine reads and
// decompresses into a small pool of large aligned buffers, one hashes the
// uncompressed stream and one writes, skipping all-zero regions (holes on a
// file target, BLKZEROOUT on a block device). A block device takes its
// aligned writes with O_DIRECT and its zeroing from several goroutines at
// once, so that its queue stays full (directwrite.go). Before the first byte goes
// out, the target's partition tables are saved to an undo file and
// invalidated (guard.go); the first megabyte of the image (protective MBR
// and primary GPT), its backup GPT header and the regions of the target's
// old tables are held back and written last, only once the whole stream
// has arrived and its checksum matched, so a failed or killed restore
// never leaves a disk that any tool takes for a valid one. A new file is
// written as DST.partial and renamed when complete. After a restore
// onto a larger (or smaller) disk the GPT's backup copy is relocated with
// package gpt, keeping every entry slot byte-identical.
package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/esxi-rescue/rescue/remote/cred"
)

// ProgressMode says how progress is shown on Options.Progress.
type ProgressMode int

const (
	// ProgressNone shows no progress.
	ProgressNone ProgressMode = iota
	// ProgressBar draws a terminal progress bar with bytes, rate and ETA.
	ProgressBar
	// ProgressPlain prints a plain progress line every few seconds (serial consoles, logs).
	ProgressPlain
)

// NoRetries as Options.Retries: no HTTP or share request is retried and a
// dropped download is not resumed (Retries 0 means the default, 5).
const NoRetries = -1

// Options says what Copy copies where and how.
type Options struct {
	// Src is a file, a block device, "-" for stdin, or an http:// or https:// URL.
	Src string
	// Dst is a block device or a file ("-" for stdout is allowed only when backing up).
	Dst string
	// SHA256 is the expected hex SHA-256 of the uncompressed image; empty to skip the check.
	// It is always compared with a hash of the bytes restored, never with a block map's claim.
	// On a mismatch Copy fails before writing the image's partition table and before any GPT fix-up.
	SHA256 string
	// Bmap is the image's block map (bmaptool's format; a path or URL) for a
	// restore. Empty means SRC.bmap (or the name without .zst/.img etc. plus
	// .bmap) next to a local image file, if there is one. With a map, holes
	// of a sparse image file are not read, every mapped range is checked
	// against its checksum and every other byte must be zero; when the map
	// records the image's SHA-256 (imgcopy's maps do) and SHA256 is empty,
	// that claim is reported (Result.BmapSHA256) without hashing the zeros.
	// A mismatch fails like -sha256.
	Bmap string
	// NoBmap ignores any block map.
	NoBmap bool
	// Manifest is the image's sha256sum manifest (a path or URL) for a
	// restore: the restored bytes must have the SHA-256 it lists for the
	// uncompressed image. Empty means SRC.sha256 next to the image, read
	// only when PubKey is set.
	Manifest string
	// PubKey is a trusted minisign public key (a .pub file or its base64
	// line). With it, a restore checks the detached signatures
	// (FILE.minisig) of the image's manifest and of its block map if one is
	// used, before anything is written; a missing or bad one fails with
	// ErrSignature naming the file. The signed manifest's SHA-256 is then
	// the one the image must have.
	PubKey string
	// SignKey is a minisign secret key file: a backup signs its manifest and
	// block map with it (DST.sha256.minisig, DST.bmap.minisig).
	// SignPasswordFile holds the key's password when it is encrypted.
	SignKey, SignPasswordFile string
	// progressNote, when set, adds to the progress line (a delta restore's counts).
	progressNote func() string
	// bmapData is the block map's content as checkSigned verified it, so
	// that loadBmap parses the same bytes.
	bmapData []byte
	// Verify reads back what was written and compares it with what was
	// written, region by region (64 MiB): a seeded 64-bit digest for data,
	// zeros (or a hole) for zero regions; a mismatch names the byte range.
	// The read-back comes from the medium, not the page cache (O_DIRECT,
	// else after fsync, BLKFLSBUF and FADV_DONTNEED), and runs while the
	// rest of the image is written: each region once its writes finished.
	// A backup is verified by decompressing it and comparing SHA-256.
	Verify bool
	// Yes allows overwriting a block device that already holds a partition table
	// (and, when backing up, an existing non-empty image file).
	Yes bool
	// NoGPTFixup leaves the GPT exactly as in the image even when the target's size differs.
	NoGPTFixup bool
	// Delta makes a restore onto an existing disk or file read the target
	// alongside the image and write only the blocks (64 KiB) that differ,
	// zeroing only where the target is not zero already (Result.Delta).
	// The checks are the same as for a full restore: the image's SHA-256
	// and block map are checked over the image stream, and its partition
	// tables are written last, after them.
	Delta bool
	// AssumeZeroed skips all-zero regions on a block device instead of zeroing them
	// (only safe when the device was just discarded or zeroed).
	AssumeZeroed bool
	// SkipBad continues after read errors on the source, filling unreadable sectors with zeros,
	// and lists the bad ranges in Result.BadRanges.
	SkipBad bool
	// Compress selects backup mode and the output compression: "zstd", "gzip" or "none".
	// Empty means restore mode (the source is decompressed if it is compressed).
	Compress string
	// SectorSize is the image's logical sector size; 0 detects it (GPT signature at 512 or
	// 4096, else the target's sector size, else 512).
	SectorSize int
	// Progress receives progress output in ProgressMode; nil shows none.
	Progress     io.Writer
	ProgressMode ProgressMode
	// ProgressInterval is the period of plain progress lines and of
	// OnProgress calls (default 5s).
	ProgressInterval time.Duration
	// OnProgress, when set, is called every ProgressInterval while a
	// restore, backup, block-map scan or verification runs, and once more
	// with Final set when it ends (whatever ProgressMode says). It runs on
	// its own goroutine and must not block for long.
	OnProgress func(Progress)
	// Log receives one-line messages about what is being done; nil discards them.
	Log func(format string, args ...any)
	// Refuse lists extra devices that must never be written (e.g. the rescue boot medium).
	Refuse []string
	// UndoPath is where the GPT fix-up saves its undo copy; empty means a file in os.TempDir().
	// The target's partition tables as they were before the restore are saved next to it
	// (".before-restore.json" instead of ".json"; Result.TableUndoPath).
	UndoPath string
	// BufferSize is the pipeline buffer size (default 4 MiB) and Buffers their number (default 4;
	// a restore onto a block device uses at least 8, to keep 4 writes in flight).
	BufferSize, Buffers int
	// Retries is how often a failed HTTP request or dropped connection is retried: 0 means
	// the default, 5; NoRetries (or any negative number) none, not even resuming a dropped
	// download. RetryDelay is the first back-off delay (default 1s, doubled each time).
	Retries    int
	RetryDelay time.Duration
	// HTTPClient is used for URLs; nil means a client of its own (no
	// keep-alive: one long download per connection).
	HTTPClient *http.Client
	// IdleTimeout: an HTTP download that receives less than 64 KiB in this
	// long (a stalled or trickling server) counts as a dropped connection,
	// so resume and retries apply (default 30s).
	IdleTimeout time.Duration
	// HTTPConns is how many connections an http(s) image is downloaded
	// over, in ranges of 2 MiB reassembled in order (default 4, at most 8;
	// 1: one stream). Ranges are used only when the server announces them
	// and sends the image's size and an ETag or Last-Modified; every range
	// must come from the same image, else the restore fails. s3:// and
	// smb:// images are read the same way (S3: ranged GETs over
	// HTTPConns connections; SMB: HTTPConns sessions, READs in flight
	// on each), checked by ETag (else Last-Modified) and by size and
	// modification time.
	HTTPConns int
	// httpChunk is the size of one ranged request (0: 2 MiB); tests make it small.
	httpChunk int64
	// Cred holds the credentials for smb://, sftp://, s3:// sources and
	// destinations (imgcopy -cred, rescue.cred=); nil: none (S3 then
	// still finds AWS_* variables and ~/.aws/credentials).
	Cred *cred.Cred
	// ConnectTimeout bounds each connection attempt to a share, and for
	// http(s) each request up to its response headers: dial, TLS
	// handshake and the server's answer (default 10s).
	ConnectTimeout time.Duration
}

// Range is a byte range [Start, Start+Length) of the image.
type Range struct {
	Start, Length int64
}

// Result describes a finished copy.
type Result struct {
	// Bytes is the length of the uncompressed image stream.
	Bytes int64
	// SourceBytes is the number of bytes read from the source (compressed size for compressed images).
	SourceBytes int64
	// Compression is the detected (restore) or chosen (backup) compression: "none", "gzip", "zstd", "xz".
	Compression string
	// SHA256 is the hex SHA-256 of the uncompressed image stream, hashed
	// from the bytes restored or backed up; empty when a restore took the
	// block map's claim instead (see BmapSHA256).
	SHA256 string
	// SHA256From says where the image's SHA-256 comes from: "stream" (the
	// whole stream was hashed, SHA256) or "bmap" (no SHA-256 was expected
	// and the block map BmapPath claims BmapSHA256; every mapped range
	// matched its checksum and every other byte was zero).
	SHA256From string
	// BmapSHA256 is the image's SHA-256 as claimed by the block map of a
	// restore when it was not hashed (SHA256From "bmap"). The map is
	// unkeyed: this is a claim, not a hash of the bytes restored.
	BmapSHA256 string `json:",omitempty"`
	// BmapPath is the block map used by a restore or written by a backup or MakeBmap;
	// BmapRanges the number of its ranges that were checked or written.
	BmapPath   string
	BmapRanges int
	// DataBytes counts bytes written as data, ZeroBytes bytes handled as zero regions
	// (holes, BLKZEROOUT or skipped with AssumeZeroed), DiscardedBytes image bytes past the
	// end of a smaller target (outside every partition).
	DataBytes, ZeroBytes, DiscardedBytes int64
	// TargetSize is the size of the target after the copy.
	TargetSize int64
	// SectorSize is the sector size used for the GPT.
	SectorSize int
	// LastUsedLBA is the image's last used LBA according to its primary GPT (0 if it has none).
	LastUsedLBA uint64
	// HasGPT says whether the image starts with a GPT.
	HasGPT bool
	// Verified is true when Options.Verify read back the target and the hashes matched.
	Verified bool
	// GPTFixup describes what was done to the GPT after the copy (empty in backup mode).
	GPTFixup string
	// UndoPath is the undo file written by the GPT fix-up, if any.
	UndoPath string
	// TableUndoPath is the undo file (package gpt's format) holding the
	// target's partition tables as they were before the restore, which
	// invalidated them before writing; `gptfix -undo FILE -yes DST` puts
	// them back. Empty when the target held none (or was a new file).
	TableUndoPath string `json:",omitempty"`
	// BadRanges lists unreadable source ranges filled with zeros (SkipBad).
	BadRanges []Range
	// LayoutPath and ManifestPath are the files written next to a backup image.
	LayoutPath, ManifestPath string
	// Signatures are the signature files a backup wrote (Options.SignKey).
	Signatures []string `json:",omitempty"`
	// Delta describes a delta restore (Options.Delta); nil for a full one.
	Delta *DeltaStats `json:",omitempty"`
	// Duration is the wall time of the copy.
	Duration time.Duration
}

// Errors that callers may want to tell apart (test with errors.Is).
var (
	// ErrRefused: a safety check refused the target (mounted, rescue medium, too small, holds a table).
	ErrRefused = errors.New("refused")
	// ErrChecksum: the image's SHA-256 did not match Options.SHA256.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrVerify: reading back the target gave different data than was written.
	ErrVerify = errors.New("verification failed")
)

// Copy copies opt.Src to opt.Dst as described in Options.
func Copy(ctx context.Context, opt Options) (*Result, error) {
	start := time.Now()
	opt.defaults()
	if opt.Src == "" || opt.Dst == "" {
		return nil, errors.New("imaging: source and destination are required")
	}
	if opt.Delta && (opt.Compress != "" || opt.AssumeZeroed) {
		return nil, errors.New("imaging: -delta is for restores and reads what is on the target: not with -compress or -assume-zeroed")
	}
	var res *Result
	var err error
	if opt.Compress != "" {
		res, err = backup(ctx, &opt)
	} else if opt.Dst == "-" {
		return nil, errors.New("imaging: restoring to stdout is not supported (a backup to stdout needs -compress)")
	} else if isRemote(opt.Dst) {
		return nil, errors.New("imaging: a share URL as the destination makes a backup: give -compress zstd, gzip or none")
	} else {
		res, err = restore(ctx, &opt)
	}
	if res != nil {
		res.Duration = time.Since(start)
	}
	return res, err
}

func (o *Options) defaults() {
	if o.BufferSize <= 0 {
		o.BufferSize = 4 << 20
	}
	o.BufferSize = (o.BufferSize + 4095) &^ 4095
	if o.Buffers < 2 {
		o.Buffers = 4
	}
	switch {
	case o.Retries == 0:
		o.Retries = 5
	case o.Retries < 0:
		o.Retries = 0 // NoRetries; remoteOptions passes it on as such
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = time.Second
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.HTTPClient == nil {
		o.HTTPClient = defaultHTTPClient
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
}

func (o *Options) logf(format string, args ...any) { o.Log(format, args...) }

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}
