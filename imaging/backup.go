package imaging

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/esxi-rescue/rescue/bmap"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/imgsig"
	"github.com/esxi-rescue/rescue/internal/zeros"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// backup copies a disk (or raw image) into an image file, compressed as
// opt.Compress says, and writes DST.gpt.json (the GPT layout) and
// DST.sha256 (a sha256sum manifest) and DST.bmap (the block map of the
// uncompressed image, with its SHA-256) next to it: all through a
// Destination, under temporary names published together at the end, so a
// failed or killed backup leaves an older backup set as it was.
func backup(ctx context.Context, opt *Options) (*Result, error) {
	return backupTo(ctx, opt)
}

func backupTo(ctx context.Context, opt *Options) (*Result, error) {
	switch opt.Compress {
	case "zstd", "gzip", "none":
	default:
		return nil, fmt.Errorf("-compress %q: use zstd, gzip or none", opt.Compress)
	}
	if opt.SHA256 != "" {
		return nil, errors.New("-sha256 checks an image being restored; it does not apply to a backup")
	}
	if opt.Bmap != "" {
		return nil, errors.New("-bmap names the block map of an image being restored; a backup writes its own (DST.bmap)")
	}
	res := &Result{Compression: opt.Compress}
	sign, err := newSigner(opt)
	if err != nil {
		return nil, err
	}
	src, err := openSource(ctx, opt)
	if err != nil {
		return nil, err
	}
	defer src.Close()

	toStdout := opt.Dst == "-"
	var out io.Writer // the image file's bytes
	var outFile *os.File
	var imgFile DestFile
	var dest Destination
	base := filepath.Base(opt.Dst)
	dir := filepath.Dir(opt.Dst)
	dstName := opt.Dst
	// beside names a companion file for the Result and messages.
	beside := func(name string) string { return filepath.Join(dir, name) }
	onShare := isRemote(opt.Dst)
	if toStdout {
		out, outFile = os.Stdout, os.Stdout
	} else if onShare {
		rd, err := openRemoteDest(ctx, opt)
		if err != nil {
			return nil, err
		}
		dest = rd
		defer dest.Abort()
		base, dstName, beside = rd.base(), rd.u.String(), rd.beside
		if imgFile, err = dest.Create(base); err != nil {
			return nil, err
		}
		out = imgFile
	} else {
		fi, err := os.Stat(opt.Dst)
		switch {
		case err == nil && !fi.Mode().IsRegular():
			return nil, refused("%s is not a regular file: a backup writes an image file (to copy onto a disk, leave out -compress)", opt.Dst)
		case err == nil && src.file != nil:
			if sfi, serr := src.file.Stat(); serr == nil && os.SameFile(fi, sfi) {
				return nil, refused("%s is the source itself", opt.Dst)
			}
			if fi.Size() > 0 && !opt.Yes {
				return nil, refused("%s exists (%s); use -yes to overwrite it", opt.Dst, gpt.HumanBytes(fi.Size()))
			}
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("backup target: %w", err)
		}
		d := newDirDest(filepath.Dir(opt.Dst))
		for _, m := range d.clean(base) {
			opt.logf("removed %s, left by a backup that did not finish", m)
		}
		dest = d
		defer dest.Abort()
		if imgFile, err = dest.Create(base); err != nil {
			return nil, err
		}
		out = imgFile
		if of, ok := imgFile.(osFiler); ok {
			outFile = of.File()
		}
	}

	// The GPT layout, read from the source before copying it.
	var layout func(io.Writer) error
	if src.file != nil && src.size > 0 {
		ss := opt.SectorSize
		if src.dev != nil && src.isBlock {
			ss = src.dev.sector
		}
		if ss == 0 {
			head := make([]byte, 4096+8)
			n, _ := src.file.ReadAt(head, 0)
			ss, _ = chooseSectorSize(0, head[:n], 0)
		}
		res.SectorSize = ss
		layout, res.LastUsedLBA = gptLayout(src.file, src.size, ss)
		res.HasGPT = layout != nil
	}

	fileHash := sha256.New()
	var w consumer
	var finish func(total int64) error
	switch opt.Compress {
	case "none":
		if toStdout || outFile == nil {
			// The file is the image: the manifest lists the image's SHA-256.
			sw := &streamWriter{w: out, name: dstName}
			if toStdout {
				sw.name = "stdout"
			}
			w = sw
			finish = func(int64) error { res.DataBytes = sw.n; return nil }
			break
		}
		sink := &rawSink{f: outFile, name: opt.Dst, limit: -1, gran: 4096, minZero: 4096, mode: zeroSkip}
		w = sink
		finish = func(total int64) error {
			res.DataBytes, res.ZeroBytes = sink.dataBytes, sink.zeroBytes
			if err := outFile.Truncate(total); err != nil {
				return fmt.Errorf("setting the size of %s: %w", opt.Dst, err)
			}
			return nil
		}
	default:
		// The compressed file's SHA-256 (for the manifest) is computed
		// beside its writes, not in the encoder's output stage.
		bw := newHashWriter(out, fileHash, 4, 1<<20)
		var enc io.WriteCloser
		if opt.Compress == "zstd" {
			enc, err = zstd.NewWriter(bw, zstd.WithEncoderConcurrency(runtime.NumCPU()), zstd.WithEncoderLevel(zstd.SpeedDefault))
		} else {
			var gz *pgzip.Writer
			gz, err = pgzip.NewWriterLevel(bw, pgzip.DefaultCompression)
			if err == nil {
				err = gz.SetConcurrency(1<<20, 2*runtime.NumCPU())
			}
			enc = gz
		}
		if err != nil {
			bw.Close()
			return nil, fmt.Errorf("%s encoder: %w", opt.Compress, err)
		}
		// A failed backup stops the encoder's goroutines (they write into
		// bw until it is closed) without writing the rest anywhere.
		encOpen := true
		defer func() {
			if encOpen {
				bw.abort()
				enc.Close()
			}
			bw.Close()
		}()
		sw := &streamWriter{w: enc, name: dstName}
		w = sw
		finish = func(int64) error {
			res.DataBytes = sw.n
			encOpen = false
			if err := enc.Close(); err != nil {
				return fmt.Errorf("writing %s: %w", dstName, unwrapPath(err))
			}
			if err := bw.Close(); err != nil {
				return fmt.Errorf("writing %s: %w", dstName, unwrapPath(err))
			}
			return nil
		}
	}

	opt.logf("backing up %s to %s (%s)", opt.Src, dstName, opt.Compress)
	pool := newPool(opt.Buffers, opt.BufferSize)
	stop := startProgress(opt, "backup", src.size, src.count.Load)
	// The block map's builder hashes the whole image too: on a dense disk
	// (one range from block 0) the range's checksum and the image's
	// SHA-256 are one computation (bmap.Builder.HashImage).
	build := bmapBuild{bmap.NewBuilder(bmapBlockSize)}
	if err := build.b.HashImage(); err != nil {
		return nil, err
	}
	total, err := runPipeline(ctx, src, pool, nil, false, w, build)
	stop()
	res.Bytes, res.SourceBytes = total, src.count.Load()
	if src.dev != nil {
		res.BadRanges = src.dev.bad
	}
	if err != nil {
		return res, fmt.Errorf("backup failed after %s: %w", gpt.HumanBytes(total), err)
	}
	bm, bmErr := build.b.Finish(nil)
	sum := build.b.ImageSHA256()
	res.SHA256 = hex.EncodeToString(sum)
	if err := finish(total); err != nil {
		return res, err
	}
	if !toStdout {
		if outFile != nil {
			fi, err := outFile.Stat()
			if err != nil {
				return res, err
			}
			res.TargetSize = fi.Size()
		}
		if err := imgFile.Close(); err != nil {
			return res, fmt.Errorf("writing %s: %w", dstName, err)
		}
		if rf, ok := imgFile.(*remoteFile); ok {
			res.TargetSize = rf.n
		}
	}
	if len(res.BadRanges) > 0 {
		opt.logf("%d unreadable ranges were filled with zeros", len(res.BadRanges))
	}
	if toStdout {
		opt.logf("backup written to stdout: no layout file or manifest")
		return res, nil
	}

	// The companions, then verify, then publish everything at once.
	put := func(name string, fill func(io.Writer) error) error {
		f, err := dest.Create(name)
		if err != nil {
			return err
		}
		bw := bufio.NewWriter(f)
		if err := fill(bw); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		return f.Close()
	}
	putBytes := func(name string, b []byte) error {
		return put(name, func(w io.Writer) error { _, err := w.Write(b); return err })
	}
	if layout != nil {
		if err := put(base+".gpt.json", layout); err != nil {
			return res, fmt.Errorf("the GPT layout file: %w", err)
		}
		res.LayoutPath = beside(base + ".gpt.json")
	} else {
		opt.logf("%s has no GPT: no layout file written", opt.Src)
		dest.Drop(base + ".gpt.json")
	}
	if bmErr != nil {
		return res, fmt.Errorf("block map of %s: %w", opt.Src, bmErr)
	}
	bmData := bm.Marshal()
	if err := putBytes(base+".bmap", bmData); err != nil {
		return res, fmt.Errorf("the block map: %w", err)
	}
	res.BmapPath, res.BmapRanges = beside(base+".bmap"), len(bm.Ranges)
	// The manifest passes `sha256sum -c` in its directory: it lists the
	// file written; the uncompressed image's SHA-256 (what -sha256 and
	// rescue.sha256= take) follows in a comment line that sha256sum
	// skips and checkSigned reads (uncompressedTag).
	var m strings.Builder
	if opt.Compress == "none" {
		fmt.Fprintf(&m, "%s  %s\n", res.SHA256, base)
	} else {
		fmt.Fprintf(&m, "%x  %s\n", fileHash.Sum(nil), base)
		fmt.Fprintf(&m, "%s%s  %s\n", uncompressedTag, res.SHA256, rawName(base))
	}
	if err := putBytes(base+".sha256", []byte(m.String())); err != nil {
		return res, fmt.Errorf("the manifest: %w", err)
	}
	res.ManifestPath = beside(base + ".sha256")
	for _, c := range []struct {
		name string
		data []byte
	}{{base + ".sha256", []byte(m.String())}, {base + ".bmap", bmData}} {
		sig := sign.sign(c.name, c.data)
		if sig == nil {
			dest.Drop(c.name + imgsig.Ext) // an older set's signature would not match
			continue
		}
		if err := putBytes(c.name+imgsig.Ext, sig); err != nil {
			return res, fmt.Errorf("the signature: %w", err)
		}
		res.Signatures = append(res.Signatures, beside(c.name+imgsig.Ext))
		opt.logf("signed %s with key %s", beside(c.name), sign.key.ID())
	}

	if opt.Verify && !onShare {
		path := opt.Dst
		if df, ok := imgFile.(*dirFile); ok {
			path = df.tmp
		}
		if err := verifyImageFile(ctx, opt, path, sum); err != nil {
			return res, err
		}
		res.Verified = true
	}
	if err := dest.Commit(); err != nil {
		return res, fmt.Errorf("backup written but not published: %w", err)
	}
	if onShare {
		opt.logf("backup published: %s (%s)", dstName, gpt.HumanBytes(res.TargetSize))
		if opt.Verify {
			// A share's temporary upload cannot be read back (S3): the
			// published image is.
			if err := verifyRemoteImage(ctx, opt, sum); err != nil {
				return res, err
			}
			res.Verified = true
		}
	}
	return res, nil
}

// uncompressedTag starts the manifest's comment line with the SHA-256 of
// the uncompressed image of a compressed backup.
const uncompressedTag = "# uncompressed image: "

// streamWriter is a consumer writing the stream in order to w (a
// compressor or stdout), zero runs included.
type streamWriter struct {
	w    io.Writer
	name string
	n    int64 // bytes written
}

func (s *streamWriter) data(b []byte, _ int64) error {
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("writing %s: %w", s.name, unwrapPath(err))
	}
	s.n += int64(len(b))
	return nil
}

func (s *streamWriter) zero(_ int64, n int64) error {
	m, err := zeros.Write(s.w, n)
	s.n += m
	if err != nil {
		return fmt.Errorf("writing %s: %w", s.name, unwrapPath(err))
	}
	return nil
}

// rawName is the name of the uncompressed image: the name without its
// compression suffix (".img.zst" → ".img"); the manifest lists the
// uncompressed stream's SHA-256 under it.
func rawName(base string) string {
	for _, ext := range []string{".zst", ".zstd", ".gz", ".xz"} {
		if s, ok := strings.CutSuffix(base, ext); ok {
			return s
		}
	}
	return base + ".raw"
}

func writeFileSync(path string, fill func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := fill(bw); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// verifyImageFile reads an image file back, decompressing it, and checks
// the uncompressed stream's SHA-256.
func verifyImageFile(ctx context.Context, opt *Options, path string, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	_ = fadviseDontNeed(f)
	r, _, closeDec, err := decompress(f)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer closeDec()
	opt.logf("verifying: reading back %s", path)
	var h hash.Hash = sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("verify: reading back %s: %w", path, err)
		}
	}
	if got := h.Sum(nil); string(got) != string(want) {
		return fmt.Errorf("%w: %s decompresses to SHA-256 %x, written %x", ErrVerify, path, got, want)
	}
	return nil
}
