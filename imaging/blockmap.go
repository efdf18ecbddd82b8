package imaging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/bmap"
	"github.com/esxi-rescue/rescue/gpt"
)

// bmapBlockSize is the block size of the block maps imgcopy writes.
const bmapBlockSize = 4096

// maxBmapFile bounds a block map file read over HTTP.
const maxBmapFile = 64 << 20

// bmapCandidates lists where a block map of the local image file src may
// be, in bmaptool's order: "x.img.zst.bmap", "x.img.bmap", "x.bmap".
func bmapCandidates(src string) []string {
	c := []string{src + ".bmap"}
	base := src
	for {
		ext := filepath.Ext(base)
		if ext == "" || strings.ContainsRune(ext, '/') {
			return c
		}
		base = strings.TrimSuffix(base, ext)
		c = append(c, base+".bmap")
	}
}

// loadBmap finds and reads the block map for a restore: opt.Bmap (a path
// or URL), else one next to a local image file. It returns nil when there
// is none or opt.NoBmap is set.
func loadBmap(ctx context.Context, opt *Options, src *source) (*bmap.Map, string, error) {
	if opt.NoBmap {
		return nil, "", nil
	}
	if opt.bmapData != nil { // verified by checkSigned: parse those bytes
		m, err := bmap.Parse(opt.bmapData)
		return m, opt.Bmap, err
	}
	if opt.Bmap != "" {
		if isRemote(opt.Bmap) {
			m, err := fetchRemoteBmap(ctx, opt, opt.Bmap)
			if err != nil {
				return nil, "", fmt.Errorf("-bmap: %w", err)
			}
			return m, redact(opt.Bmap), nil
		}
		if isURL(opt.Bmap) {
			m, err := fetchBmap(ctx, opt, opt.Bmap)
			return m, opt.Bmap, err
		}
		m, err := bmap.ReadFile(opt.Bmap)
		if err != nil {
			return nil, "", fmt.Errorf("-bmap: %w", err)
		}
		return m, opt.Bmap, nil
	}
	if isRemote(opt.Src) && !opt.SkipBad {
		return remoteBmapBeside(ctx, opt)
	}
	// Only a plain image file has a block map next to it; a salvage
	// (-skip-bad) must not be stopped by a map that its zeros contradict.
	if src.file == nil || src.isBlock || opt.Src == "-" || opt.SkipBad {
		return nil, "", nil
	}
	for _, p := range bmapCandidates(opt.Src) {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		m, err := bmap.ReadFile(p)
		if err != nil {
			return nil, "", fmt.Errorf("the image's block map: %w (use -no-bmap to restore without it)", err)
		}
		return m, p, nil
	}
	return nil, "", nil
}

// fetchBmap downloads a block map, with the image download's retries.
func fetchBmap(ctx context.Context, opt *Options, url string) (*bmap.Map, error) {
	o := *opt
	o.Src = url
	h, err := openHTTP(ctx, &o)
	if err != nil {
		return nil, fmt.Errorf("-bmap: %w", err)
	}
	defer h.Close()
	data, err := io.ReadAll(io.LimitReader(h, maxBmapFile+1))
	if err != nil {
		return nil, fmt.Errorf("-bmap %s: %w", url, err)
	}
	if len(data) > maxBmapFile {
		return nil, fmt.Errorf("-bmap %s: larger than %s, not a block map", url, gpt.HumanBytes(maxBmapFile))
	}
	m, err := bmap.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("-bmap %s: %w", url, err)
	}
	return m, nil
}

// bmapCheck is a consumer checking the stream against a block map; a
// disagreement is a checksum error.
type bmapCheck struct {
	c    *bmap.Checker
	path string
}

func (b *bmapCheck) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: the image does not match its block map %s: %w (use -no-bmap to restore without the map)", ErrChecksum, b.path, err)
}

func (b *bmapCheck) data(p []byte, off int64) error { return b.wrap(b.c.Data(p, off)) }
func (b *bmapCheck) zero(off, n int64) error        { return b.wrap(b.c.Zero(off, n)) }

// bmapBuild is a consumer making a block map of the stream.
type bmapBuild struct{ b *bmap.Builder }

func (b bmapBuild) data(p []byte, off int64) error { return b.b.Data(p, off) }
func (b bmapBuild) zero(off, n int64) error        { return b.b.Zero(off, n) }

// writeBmap writes m to path atomically (a temporary file renamed into place).
func writeBmap(path string, m *bmap.Map) error {
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, func(w io.Writer) error { _, err := w.Write(m.Marshal()); return err }); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing the block map %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing the block map %s: %w", path, err)
	}
	return nil
}

// MakeBmap reads the image opt.Src (a file, device, stdin or URL; gzip,
// zstd and xz are decompressed) and writes its block map in bmaptool's
// format to opt.Dst (default: SRC.bmap next to a local image file): the
// non-zero 4 KiB blocks as ranges with SHA-256 checksums, and the SHA-256
// of the whole image. A later restore with the map reads only the mapped
// ranges of a sparse image file and still prints the image's SHA-256.
// An existing map file is replaced only with opt.Yes.
func MakeBmap(ctx context.Context, opt Options) (*Result, error) {
	start := time.Now()
	opt.defaults()
	if opt.Src == "" {
		return nil, errors.New("imaging: the image is required")
	}
	if opt.Dst == "" {
		if isURL(opt.Src) || opt.Src == "-" {
			return nil, errors.New("imaging: name the block map file to write (the image is not a local file)")
		}
		opt.Dst = opt.Src + ".bmap"
	}
	if fi, err := os.Stat(opt.Dst); err == nil {
		if sfi, serr := os.Stat(opt.Src); serr == nil && os.SameFile(fi, sfi) {
			return nil, refused("%s is the image itself", opt.Dst)
		}
		if !fi.Mode().IsRegular() {
			return nil, refused("%s is not a regular file: a block map is written to a file", opt.Dst)
		}
		if !opt.Yes {
			return nil, refused("%s exists (%s); use -yes to replace it", opt.Dst, gpt.HumanBytes(fi.Size()))
		}
	}
	src, err := openSource(ctx, &opt)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	if src.isBlock {
		return nil, refused("%s is a block device: make the block map of an image file (back the disk up first)", opt.Src)
	}
	stream, comp, closeDec, err := src.stream()
	if err != nil {
		return nil, err
	}
	defer closeDec()
	res := &Result{Compression: comp}
	opt.logf("making the block map of %s (%s)", opt.Src, res.Compression)
	sha := &shaDigest{h: sha256.New()}
	build := bmapBuild{bmap.NewBuilder(bmapBlockSize)}
	stop := startProgress(&opt, "bmap", src.size, src.count.Load)
	total, err := runPipeline(ctx, stream, newPool(opt.Buffers, opt.BufferSize), nil, false, sha, build)
	stop()
	res.Bytes, res.SourceBytes = total, src.count.Load()
	if err != nil {
		return res, fmt.Errorf("reading %s: %w", opt.Src, err)
	}
	sum := sha.h.Sum(nil)
	res.SHA256 = hex.EncodeToString(sum)
	m, err := build.b.Finish(sum)
	if err != nil {
		return res, fmt.Errorf("block map of %s: %w", opt.Src, err)
	}
	res.DataBytes = m.MappedBytes()
	res.ZeroBytes = total - res.DataBytes
	if err := writeBmap(opt.Dst, m); err != nil {
		return res, err
	}
	res.BmapPath, res.BmapRanges = opt.Dst, len(m.Ranges)
	res.Duration = time.Since(start)
	return res, nil
}
