package imaging

import (
	"context"
	"io"
)

// OpenImage opens opt.Src as Copy reads an image (a file or block device,
// an http(s) URL, a share URL with opt.Cred, or a udp:// multicast
// session) and returns its uncompressed stream: gzip, zstd or xz chosen by
// the magic bytes and decoded as Copy decodes them. It also names the
// compression ("none" for a plain image). Closing the stream stops the
// decoder and closes the source. This is the one way the product opens a
// possibly compressed image.
func OpenImage(ctx context.Context, opt Options) (io.ReadCloser, string, error) {
	opt.defaults()
	src, err := openSource(ctx, &opt)
	if err != nil {
		return nil, "", err
	}
	r, kind, stop, err := src.stream()
	if err != nil {
		src.Close()
		return nil, "", err
	}
	return &imageStream{Reader: r, stop: stop, src: src}, kind, nil
}

// imageStream is OpenImage's stream.
type imageStream struct {
	io.Reader
	stop func() error // the decoder's
	src  *source
}

func (s *imageStream) Close() error {
	err := s.stop()
	if cerr := s.src.Close(); err == nil {
		err = cerr
	}
	return err
}
