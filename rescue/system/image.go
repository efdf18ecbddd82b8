package system

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/remote/dial"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
)

// headBytes is how much of an image's start is read to find its GPT: the
// protective MBR, header and a 128-entry array fit in 34 sectors of 512
// bytes or 6 of 4096.
const headBytes = 64 << 10

// openStream opens a file, an http(s) URL or a share URL (with the
// credentials c, which may be nil) that is not an image: a layout file,
// credentials. An image is opened by imaging.OpenImage.
func openStream(ctx context.Context, src string, c *cred.Cred) (io.ReadCloser, error) {
	if cmdline.IsShare(src) {
		return dial.Open(ctx, src, &remote.Options{Cred: c, Retries: 3})
	}
	if !cmdline.IsURL(src) {
		return os.Open(src)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", src, resp.Status)
	}
	return resp.Body, nil
}

// ImageTable reads the primary GPT at the start of an image (file or URL,
// compressed or not, 512- or 4096-byte sectors) without reading the rest.
// It opens and decompresses the image with imaging.OpenImage, as a
// restore does.
// The returned table has no backup copy; its DiskSize is the size of the
// disk the image was taken from (from the header's AlternateLBA).
func ImageTable(ctx context.Context, src string) (*gpt.Table, string, error) {
	return imageTable(ctx, src, nil)
}

// imageTable is ImageTable with credentials for share URLs.
func imageTable(ctx context.Context, src string, c *cred.Cred) (*gpt.Table, string, error) {
	// Opened and decompressed as a restore reads it; one connection: only
	// its start is read.
	r, comp, err := imaging.OpenImage(ctx, imaging.Options{Src: src, Cred: c, Retries: 3, HTTPConns: 1})
	if err != nil {
		return nil, "", fmt.Errorf("opening the image: %w", err)
	}
	defer r.Close()
	head := make([]byte, headBytes)
	n, err := io.ReadFull(r, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, comp, fmt.Errorf("reading the image's first %d bytes: %w", headBytes, err)
	}
	head = head[:n]
	var errs []error
	for _, ss := range []int{512, 4096} {
		c, err := gpt.ParsePrimary(head, ss)
		if err != nil {
			errs = append(errs, fmt.Errorf("%d-byte sectors: %w", ss, err))
			continue
		}
		return &gpt.Table{SectorSize: ss, DiskSize: int64(c.Header.AlternateLBA+1) * int64(ss),
			MBR: append([]byte(nil), head[:ss]...), Primary: c}, comp, nil
	}
	return nil, comp, fmt.Errorf("the image has no GPT at its start: %v", errs)
}

// MinDiskSize is the smallest disk the image's partitions fit on, with
// room for the backup GPT after the last partition.
func MinDiskSize(t *gpt.Table) int64 {
	c := t.Best()
	if c == nil {
		return 0
	}
	ss := uint64(t.SectorSize)
	arraySectors := (uint64(c.Header.NumEntries)*uint64(c.Header.EntrySize) + ss - 1) / ss
	return int64((t.LastUsedLBA() + 1 + arraySectors + 1) * ss)
}
