package imaging

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/esxi-rescue/rescue/bmap"
	"github.com/esxi-rescue/rescue/gpt"
)

// headLen is how much of the image start (protective MBR, primary GPT and
// then some) is held back and written only after the whole stream arrived
// and its checksum matched.
const headLen = 1 << 20

// restore copies an image onto a disk or file. A file it created is
// removed again when the restore fails.
func restore(ctx context.Context, opt *Options) (*Result, error) {
	var partial string
	res, err := restoreTo(ctx, opt, &partial)
	if err != nil && partial != "" {
		os.Remove(partial)
	}
	return res, err
}

func restoreTo(ctx context.Context, opt *Options, partial *string) (*Result, error) {
	want, err := parseSHA(opt.SHA256)
	if err != nil {
		return nil, err
	}
	if err := checkRefuse(opt.Refuse); err != nil {
		return nil, err
	}
	res := &Result{}
	src, err := openSource(ctx, opt)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	stream, comp, closeDec, err := src.stream()
	if err != nil {
		return nil, err
	}
	defer closeDec()
	res.Compression = comp

	// Read the first chunk before touching the target: it tells the
	// sector size and, through the primary GPT, how big the target must be.
	first := &chunk{buf: alignedBuf(headLen), own: true}
	n, err := io.ReadFull(stream, first.buf)
	first.n = n
	firstEOF := false
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		firstEOF = true
	case err != nil:
		return nil, fmt.Errorf("reading the image %s: %w", opt.Src, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("the image %s is empty", opt.Src)
	}
	head := first.buf[:n]
	imgSize := int64(-1)
	switch {
	case firstEOF:
		imgSize = int64(n)
	case res.Compression == "none" && src.size >= 0:
		imgSize = src.size
	}

	// Signatures and the manifest, then the block map, before touching the target.
	if want, err = checkSigned(ctx, opt, src, res.Compression, want); err != nil {
		return nil, err
	}
	bm, bmPath, err := loadBmap(ctx, opt, src)
	if err != nil {
		return nil, err
	}
	if bm != nil {
		if imgSize >= 0 && bm.ImageSize != imgSize {
			return nil, fmt.Errorf("the block map %s describes an image of %d bytes but %s is %d bytes: it belongs to another image (use -no-bmap to restore without it)",
				bmPath, bm.ImageSize, opt.Src, imgSize)
		}
		if want != nil && bm.ImageSHA256 != nil && !bytes.Equal(want, bm.ImageSHA256) {
			return nil, fmt.Errorf("%w: the block map %s records the image's SHA-256 as %x, expected %s; nothing was written",
				ErrChecksum, bmPath, bm.ImageSHA256, opt.SHA256)
		}
		found := ""
		if opt.Bmap == "" {
			found = " (found next to the image; -no-bmap ignores it)"
		}
		opt.logf("using the block map %s%s: %d ranges, %s of %s mapped", bmPath, found, len(bm.Ranges),
			gpt.HumanBytes(bm.MappedBytes()), gpt.HumanBytes(bm.ImageSize))
	}

	t, err := openTarget(opt, src)
	if err != nil {
		return nil, err
	}
	if t.created {
		*partial = t.path
	}
	defer t.close()
	ss, err := chooseSectorSize(opt.SectorSize, head, t.sectorSize)
	if err != nil {
		return nil, err
	}
	res.SectorSize = ss
	var altLBA uint64
	if last, alt, gerr := imageGPT(head, ss); gerr == nil {
		res.HasGPT = true
		res.LastUsedLBA, altLBA = last, alt
	} else if len(head) >= 2*ss && string(head[ss:ss+8]) == gpt.Signature {
		opt.logf("warning: the image's primary GPT is damaged (%v): no size check by partitions, no GPT fix-up", gerr)
	}

	// Size checks.
	limit := int64(-1)
	if !t.fresh {
		limit = t.size
	}
	if limit >= 0 {
		var need int64
		var what string
		switch {
		case res.HasGPT:
			need = (int64(res.LastUsedLBA) + 1) * int64(ss)
			what = fmt.Sprintf("the image's last partition ends at LBA %d (%s)", res.LastUsedLBA, gpt.HumanBytes(need))
		case imgSize >= 0:
			need = imgSize
			what = fmt.Sprintf("the image is %s (%d bytes) and has no GPT", gpt.HumanBytes(imgSize), imgSize)
		}
		if need > limit {
			return nil, refused("%s is %s (%d bytes) but %s: it is %s (%d bytes) too small",
				opt.Dst, gpt.HumanBytes(limit), limit, what, gpt.HumanBytes(need-limit), need-limit)
		}
		if res.HasGPT && imgSize > limit {
			opt.logf("%s is %s smaller than the image; the image's tail past the last partition is dropped and its backup GPT rebuilt at the end of %s",
				opt.Dst, gpt.HumanBytes(imgSize-limit), opt.Dst)
		}
	}

	// Overwriting anything of value needs -yes: a partition table, a
	// filesystem or volume signature (on a disk or in an image file), or
	// a partition given for the whole disk; what is there is shown.
	if !t.fresh {
		desc := describeTable(t.f, t.size, cmp.Or(t.sectorSize, ss))
		if desc == "" && !t.isBlock {
			desc = describeTable(t.f, t.size, 4096+512-ss)
		}
		if desc == "" {
			if c := describeContent(t.f, t.size); c != "" {
				desc = c + " (and no partition table)"
			}
		}
		if t.partOf != "" {
			what := "nothing known"
			if desc != "" {
				what = desc
			}
			if !opt.Yes {
				return nil, refused("%s is partition %d of the disk %s, not a whole disk: a disk image belongs on the whole disk (%s). It holds %s\nuse -yes to write the image into this partition anyway",
					opt.Dst, t.partNo, t.partOf, t.partOf, what)
			}
			opt.logf("WARNING: %s is PARTITION %d OF THE DISK %s, not a whole disk: the image goes into the partition (-yes); it holds %s", opt.Dst, t.partNo, t.partOf, what)
		} else if desc != "" {
			if !opt.Yes {
				return nil, refused("%s already holds %s\nuse -yes to overwrite it", opt.Dst, desc)
			}
			opt.logf("overwriting %s, which holds %s", opt.Dst, desc)
		}
	}

	sink := &rawSink{f: t.f, direct: t.direct, name: t.path, limit: limit, gran: 4096, noLimitData: !res.HasGPT}
	if opt.Verify {
		sink.sums = newWriteSums()
	}
	switch {
	case t.fresh:
		sink.mode, sink.minZero = zeroSkip, 4096
	case t.isBlock && opt.AssumeZeroed:
		sink.mode, sink.minZero = zeroSkip, 4096
	case t.isBlock:
		sink.mode, sink.minZero = zeroBlkZero, 64<<10
	default:
		sink.mode, sink.minZero = zeroPunch, 64<<10
	}

	// Before the first byte goes out: save the target's partition tables
	// and invalidate them, so that until the whole image arrived and
	// matched, no tool takes the disk for a good one (see guard.go).
	var g *guard
	if !t.fresh {
		unit, sizes := 512, []int{512, 4096}
		if t.isBlock {
			unit, sizes = t.sectorSize, []int{t.sectorSize}
		}
		if g, err = guardTarget(t.f, opt.Dst, t.size, unit, sizes, tableUndoPath(opt)); err != nil {
			return nil, err
		}
		if g != nil {
			res.TableUndoPath = g.undoPath
			opt.logf("saved the partition table of %s to %s and invalidated it until the image is written and checked (gptfix -undo %s -yes %s puts it back)",
				opt.Dst, g.undoPath, g.undoPath, opt.Dst)
		}
	}
	// What is held back and written last: the image's head (MBR and
	// primary GPT), its backup GPT header, and the target's table regions.
	holds := [][2]int64{{0, int64(min(headLen, n))}}
	if r, ok := imageBackupHeader(head, ss); ok {
		holds = append(holds, r)
	}
	if imgSize >= int64(ss) {
		holds = append(holds, [2]int64{imgSize - int64(ss), imgSize})
	}
	if g != nil {
		holds = append(holds, g.ranges()...)
	}
	hd := newHeld(sink, holds)
	var w consumer = hd
	dw, err := startDelta(ctx, opt, src, res.Compression, t, hd, imgSize)
	if err != nil {
		return nil, err
	}
	if dw != nil {
		defer dw.stop()
		w = dw
	}
	// aftermath says, for an error after the first write, what was
	// overwritten and how to get back.
	aftermath := func(err error) error {
		var b strings.Builder
		if lo, hi, ok := sink.written(); ok {
			fmt.Fprintf(&b, "bytes %d-%d of %s were overwritten", lo, hi-1, opt.Dst)
		} else {
			fmt.Fprintf(&b, "no image data was written to %s", opt.Dst)
		}
		if g != nil {
			fmt.Fprintf(&b, " and its partition table is invalidated (saved in %s): restart the restore, or put the old table back with gptfix -undo %s -yes %s",
				g.undoPath, g.undoPath, opt.Dst)
		} else if !t.created {
			b.WriteString(": restart the restore")
		}
		return fmt.Errorf("%w; %s", err, b.String())
	}
	// What checks the stream: the block map's range checksums, and a
	// SHA-256 of everything. The map's own record of the image's SHA-256
	// stands in for that hash only when no SHA-256 was expected: the map
	// is unkeyed, so whoever can place it can re-seal it for another
	// image, and an expected SHA-256 is always compared with the bytes.
	var digests []consumer
	var check *bmapCheck
	var sha *shaDigest
	if bm != nil {
		check = &bmapCheck{c: bmap.NewChecker(bm), path: bmPath}
		digests = append(digests, check)
	}
	if bm == nil || !bm.Complete() || want != nil {
		sha = &shaDigest{h: sha256.New()}
		digests = append(digests, sha)
	}
	opt.logf("restoring %s (%s) onto %s", opt.Src, res.Compression, opt.Dst)
	stop := startProgress(opt, "restore", src.size, src.count.Load)
	// A block device takes its writes directWriters at a time (O_DIRECT
	// and BLKZEROOUT, see directwrite.go), with buffers enough to keep
	// them busy.
	nbuf := opt.Buffers
	if t.direct != nil {
		nbuf = max(nbuf, directBuffers)
		sink.startQueue()
	}
	// -verify reads back what reached the target while the rest is written.
	if opt.Verify {
		sink.sums.start(ctx, t.f, t.path, sink.frontier)
		defer sink.sums.close()
	}
	newBufs := newPool
	if dw != nil {
		newBufs = hugePool // huge pages: see hugeBuf
	}
	total, err := runPipeline(ctx, stream, newBufs(nbuf, opt.BufferSize), first, firstEOF, w, digests...)
	if werr := sink.wait(); werr != nil && err == nil {
		err = werr
	}
	stop()
	if dw != nil {
		dw.stop()
	}
	res.Bytes, res.SourceBytes = total, src.count.Load()
	if src.dev != nil {
		res.BadRanges = src.dev.bad
	}
	if err != nil {
		return res, aftermath(fmt.Errorf("restore failed after %s of the image; the image's partition table was not written: %w",
			gpt.HumanBytes(total), err))
	}
	// A raw image that ends before its last partition is truncated; one
	// that ends after it but before its backup GPT was trimmed on purpose
	// (or cut short in the last megabytes): the fix-up rebuilds the backup.
	trimmed := false
	if res.HasGPT {
		if end := (int64(res.LastUsedLBA) + 1) * int64(ss); total < end {
			return res, aftermath(fmt.Errorf("the image is truncated: it ends at byte %d but its last partition ends at LBA %d (byte %d); the image's partition table was not written",
				total, res.LastUsedLBA, end))
		}
		if end := (int64(altLBA) + 1) * int64(ss); altLBA > res.LastUsedLBA && total < end {
			trimmed = true
			opt.logf("warning: the image ends at byte %d, before its backup GPT (LBA %d): a trimmed or cut-short image; the backup GPT will be rebuilt", total, altLBA)
		}
	}
	var sum []byte
	if check != nil {
		if err := check.wrap(check.c.Finish(total)); err != nil {
			return res, aftermath(fmt.Errorf("%w; the image's partition table was not written", err))
		}
		res.BmapPath, res.BmapRanges = bmPath, check.c.RangesChecked()
	}
	if sha != nil {
		sum, res.SHA256From = sha.h.Sum(nil), "stream"
		res.SHA256 = hex.EncodeToString(sum)
	} else {
		// Not hashed: what the map claims, reported as such.
		res.SHA256From, res.BmapSHA256 = "bmap", hex.EncodeToString(bm.ImageSHA256)
	}
	if want != nil && !bytes.Equal(want, sum) {
		return res, aftermath(fmt.Errorf("%w: the image's SHA-256 is %s, expected %s; the image's partition table was not written, no GPT fix-up",
			ErrChecksum, res.SHA256, opt.SHA256))
	}
	finalSize := total
	if trimmed {
		// A new file gets the size of the disk the image came from, so
		// the backup GPT has its place again.
		finalSize = (int64(altLBA) + 1) * int64(ss)
	}
	if t.fresh || (limit < 0) {
		if err := t.f.Truncate(finalSize); err != nil {
			return res, aftermath(fmt.Errorf("setting the size of %s: %w", t.path, err))
		}
	}
	// With -verify, what was written is read back before the held-back
	// partition tables go out, and those after.
	if opt.Verify {
		if err := sink.sums.verify(ctx, opt, t.f, t.path); err != nil {
			return res, aftermath(fmt.Errorf("%w; the image's partition table was not written", err))
		}
	}
	if err := hd.flush(total); err != nil {
		return res, aftermath(fmt.Errorf("writing the image's partition table: %w", err))
	}
	res.DataBytes, res.ZeroBytes, res.DiscardedBytes = sink.dataBytes, sink.zeroBytes, sink.discarded
	if dw != nil {
		res.Delta = dw.stats(sink.dataBytes + sink.zeroBytes)
	}
	if err := t.f.Sync(); err != nil {
		return res, aftermath(fmt.Errorf("flushing %s: %w", t.path, err))
	}
	res.TargetSize = t.size
	if t.fresh {
		res.TargetSize = finalSize
	}
	if d := sink.directWritten(); d > 0 {
		opt.logf("%s of %s written with O_DIRECT (past the page cache)", gpt.HumanBytes(d), gpt.HumanBytes(sink.dataBytes))
	}
	if res.DiscardedBytes > 0 {
		opt.logf("dropped the last %s of the image, past the end of %s (outside every partition)", gpt.HumanBytes(res.DiscardedBytes), opt.Dst)
	}
	if len(res.BadRanges) > 0 {
		opt.logf("%d unreadable ranges were filled with zeros", len(res.BadRanges))
	}

	if opt.Verify {
		if err := sink.sums.verify(ctx, opt, t.f, t.path); err != nil {
			return res, aftermath(err)
		}
		res.Verified = true
	}
	// The O_DIRECT descriptor is done; the held one stays open for the
	// fix-up, so nothing else gets the disk in between.
	if t.direct != nil {
		t.direct.Close()
		t.direct = nil
	}

	switch {
	case !res.HasGPT:
		res.GPTFixup = "the image has no GPT: nothing to fix"
	case res.TargetSize == total && !trimmed:
		res.GPTFixup = "the target is as large as the image: GPT left as in the image"
	case opt.NoGPTFixup:
		res.GPTFixup = fmt.Sprintf("GPT left as in the image (-no-gpt-fixup); the target is %s %s than the image",
			gpt.HumanBytes(abs(res.TargetSize-total)), biggerSmaller(res.TargetSize-total))
		if trimmed {
			res.GPTFixup = "GPT left as in the image (-no-gpt-fixup); the image has no backup GPT"
		}
	default:
		undo := opt.UndoPath
		if undo == "" {
			undo = undoName("", "gpt-fixup", opt.Dst)
		}
		dev := &gpt.Device{File: t.f, Size: res.TargetSize, SectorSize: ss, IsBlock: t.isBlock}
		desc, applied, err := fixupGPT(dev, undo)
		if err != nil {
			return res, fmt.Errorf("the image was written but adapting its GPT to the target failed: %w", err)
		}
		res.GPTFixup = desc
		if applied {
			res.UndoPath = undo
		}
	}
	t.close()
	if err := t.commit(opt.Dst); err != nil {
		return res, err
	}
	return res, nil
}

// tableUndoPath is where a restore saves the target's partition table
// before invalidating it: next to Options.UndoPath (its name with
// ".before-restore" added) when that is set, else a fresh name in
// os.TempDir().
func tableUndoPath(opt *Options) string {
	if opt.UndoPath != "" {
		return strings.TrimSuffix(opt.UndoPath, ".json") + ".before-restore.json"
	}
	return undoName("", "before-restore", opt.Dst)
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func biggerSmaller(d int64) string {
	if d < 0 {
		return "smaller"
	}
	return "larger"
}

// parseSHA parses an expected SHA-256 in hex ("" → nil).
func parseSHA(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("-sha256 %q is not 64 hex digits", s)
	}
	return b, nil
}

// chooseSectorSize picks the image's sector size: explicit, else where the
// GPT signature is, else the target's, else 512. An image whose GPT uses a
// sector size other than the target device's cannot work there.
func chooseSectorSize(explicit int, head []byte, targetSS int) (int, error) {
	found := 0
	for _, ss := range []int{512, 4096} {
		if len(head) >= ss+8 && string(head[ss:ss+8]) == gpt.Signature {
			found = ss
			break
		}
	}
	ss := explicit
	switch {
	case ss == 0 && found != 0:
		ss = found
	case ss == 0 && targetSS != 0:
		ss = targetSS
	case ss == 0:
		ss = 512
	}
	if ss != 512 && ss != 4096 {
		return 0, fmt.Errorf("sector size %d is not supported (512 or 4096)", ss)
	}
	if found != 0 && explicit != 0 && found != explicit {
		return 0, fmt.Errorf("the image's GPT is laid out for %d-byte sectors, not %d as requested", found, explicit)
	}
	if targetSS != 0 && found != 0 && targetSS != found {
		return 0, refused("the image's GPT is laid out for %d-byte sectors but the target has %d-byte sectors: its partitions would not be found", found, targetSS)
	}
	return ss, nil
}
