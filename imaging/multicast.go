package imaging

import (
	"context"
	"errors"

	"github.com/esxi-rescue/rescue/udpcast"
)

// openUdpcast starts udp-receiver for a udpcast:// source. A multicast
// restore must know what it should receive (a SHA-256, a manifest or a
// block map): udp-receiver can end "complete" after the sender vanished.
func openUdpcast(ctx context.Context, opt *Options) (*source, error) {
	sp, err := udpcast.Parse(opt.Src)
	if err != nil {
		return nil, err
	}
	if opt.Compress != "" {
		return nil, errors.New("a udpcast:// source can only be restored, not backed up")
	}
	if opt.SHA256 == "" && opt.Manifest == "" && opt.Bmap == "" {
		return nil, errors.New("a multicast restore needs the image's SHA-256 (-sha256, -manifest or a -bmap): a receiver that misses the end of the stream cannot tell otherwise")
	}
	r, err := udpcast.Start(ctx, sp, opt.Log)
	if err != nil {
		return nil, err
	}
	return &source{name: opt.Src, r: r, size: -1, closers: []func() error{r.Close}}, nil
}
