package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/bmap"
	"github.com/esxi-rescue/rescue/imgsig"
	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/dial"
)

// ErrSignature is wrapped by every failed signature check of a restore
// (with Options.PubKey): a missing, wrong-key or non-matching signature of
// the image's manifest or block map. Nothing has been written then.
var ErrSignature = errors.New("signature check failed")

// maxManifest bounds a manifest file read for a restore.
const maxManifest = 1 << 20

// checkSigned runs before the target is opened. With opt.Manifest it reads
// the image's sha256sum manifest, whose SHA-256 for the uncompressed image
// the restored bytes must then have. With opt.PubKey every file the restore
// trusts must carry a good minisign signature by that key (FILE.minisig):
// the manifest (opt.Manifest, else SRC.sha256 next to the image) and the
// block map if one is used (whose verified bytes are the ones parsed
// later); at least one of them must exist. It returns the SHA-256 the
// image must have (want, or the signed one).
func checkSigned(ctx context.Context, opt *Options, src *source, compression string, want []byte) ([]byte, error) {
	if opt.PubKey == "" && opt.Manifest == "" {
		return want, nil
	}
	var key *imgsig.PublicKey
	if opt.PubKey != "" {
		k, err := imgsig.LoadPublicKey(opt.PubKey)
		if err != nil {
			return nil, err
		}
		key = &k
	}
	sigErr := func(err error) error {
		return fmt.Errorf("%w: %w; nothing was written", ErrSignature, err)
	}
	verify := func(name string, data []byte) error {
		sig, err := fetchSmall(ctx, opt, beside(name, imgsig.Ext), imgsig.MaxSignature)
		if errors.Is(err, fs.ErrNotExist) {
			sig, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("the signature of %s: %w", redact(name), err)
		}
		if err := imgsig.Verify(*key, redact(name), data, redact(beside(name, imgsig.Ext)), sig); err != nil {
			return sigErr(err)
		}
		return nil
	}
	adopt := func(sum []byte, from string) error {
		if want != nil && !bytes.Equal(want, sum) {
			return fmt.Errorf("%w: the expected SHA-256 %x differs from %x in %s; nothing was written", ErrChecksum, want, sum, from)
		}
		want = sum
		return nil
	}

	manifest := opt.Manifest
	if manifest == "" && opt.Src != "-" && (isURL(opt.Src) || isRemote(opt.Src) || src.file != nil && !src.isBlock) {
		manifest = beside(opt.Src, ".sha256")
	}
	haveManifest := false
	if manifest != "" {
		data, err := fetchSmall(ctx, opt, manifest, maxManifest)
		switch {
		case errors.Is(err, fs.ErrNotExist) && opt.Manifest == "":
		case err != nil:
			return nil, fmt.Errorf("the image's manifest: %w", err)
		default:
			if key != nil {
				if err := verify(manifest, data); err != nil {
					return nil, err
				}
			}
			m, err := imgsig.ParseManifest(uncommentRaw(data))
			if err != nil {
				return nil, fmt.Errorf("the manifest %s: %w", manifest, err)
			}
			name, sum, err := m.RawSHA256(rawImageName(opt.Src, compression))
			if err != nil {
				return nil, fmt.Errorf("the manifest %s: %w", manifest, err)
			}
			if err := adopt(sum, "the manifest "+manifest); err != nil {
				return nil, err
			}
			haveManifest = true
			how := "unsigned"
			if key != nil {
				how = "signature by key " + key.ID() + " good"
			}
			opt.logf("manifest %s (%s): the image %s must have SHA-256 %x", manifest, how, name, sum)
		}
	}
	if key == nil {
		return want, nil
	}

	// A block map the restore will use must be signed as well.
	bmPath := ""
	switch {
	case opt.NoBmap:
	case opt.Bmap != "":
		bmPath = opt.Bmap
	case isRemote(opt.Src) && !opt.SkipBad:
		if _, p, err := remoteBmapBeside(ctx, opt); err == nil && p != "" {
			bmPath = p
		}
	case src.file != nil && !src.isBlock && opt.Src != "-" && !opt.SkipBad:
		for _, p := range bmapCandidates(opt.Src) {
			if _, err := os.Stat(p); err == nil {
				bmPath = p
				break
			}
		}
	}
	if bmPath != "" {
		data, err := fetchSmall(ctx, opt, bmPath, maxBmapFile)
		if err != nil {
			return nil, fmt.Errorf("the block map: %w", err)
		}
		if err := verify(bmPath, data); err != nil {
			return nil, err
		}
		opt.Bmap, opt.bmapData = bmPath, data
		if !haveManifest {
			m, err := bmap.Parse(data)
			if err != nil {
				return nil, fmt.Errorf("the block map %s: %w", bmPath, err)
			}
			if m.ImageSHA256 == nil {
				return nil, sigErr(fmt.Errorf("the signed block map %s records no SHA-256 of the image (imgcopy's maps do) and there is no manifest %s", bmPath, manifest))
			}
			if err := adopt(m.ImageSHA256, "the signed block map "+bmPath); err != nil {
				return nil, err
			}
		}
		opt.logf("block map %s: signature by key %s good", bmPath, key.ID())
		return want, nil
	}
	if !haveManifest {
		if manifest == "" {
			return nil, sigErr(&imgsig.Error{Kind: imgsig.ErrMissing, Msg: fmt.Sprintf(
				"a trusted key is set but %s has no manifest next to it: name the image's signed manifest or block map", opt.Src)})
		}
		return nil, sigErr(&imgsig.Error{File: manifest, Sig: manifest + imgsig.Ext, Kind: imgsig.ErrMissing, Msg: fmt.Sprintf(
			"a trusted key is set but there is no manifest %s (nor a block map): the image needs its signed manifest (imgcopy -sign KEY writes %s and %s)",
			manifest, filepath.Base(manifest), filepath.Base(manifest)+imgsig.Ext)})
	}
	return want, nil
}

// beside names the companion file loc+ext (for remote URLs the path gets
// the suffix, not the query).
func beside(loc, ext string) string {
	if isRemote(loc) {
		if u, err := remote.Parse(loc); err == nil {
			return u.Sibling(ext).Raw()
		}
	}
	return loc + ext
}

// rawImageName is the name of the uncompressed image as a manifest lists
// it: the image's base name, without its compression suffix.
func rawImageName(src, compression string) string {
	base := filepath.Base(src)
	if isURL(src) {
		if u, err := url.Parse(src); err == nil {
			base = path.Base(u.Path)
		}
	}
	if compression == "none" || compression == "" {
		return base
	}
	return rawName(base)
}

// fetchSmall reads a small file or URL whole (at most max bytes). A file or
// URL that does not exist (HTTP 404/410) gives an error wrapping
// fs.ErrNotExist.
func fetchSmall(ctx context.Context, opt *Options, loc string, max int64) ([]byte, error) {
	if isRemote(loc) {
		r, err := dial.Open(ctx, loc, opt.remoteOptions())
		if errors.Is(err, remote.ErrNotFound) {
			return nil, fmt.Errorf("%s: %w", redact(loc), fs.ErrNotExist)
		}
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return readLimited(r, redact(loc), max)
	}
	if !isURL(loc) {
		f, err := os.Open(loc)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readLimited(f, loc, max)
	}
	var last error
	delay := opt.RetryDelay
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			delay *= 2
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", loc, err)
		}
		resp, err := opt.HTTPClient.Do(req)
		if err != nil {
			last = fmt.Errorf("%w: %s: %w", ErrHTTP, loc, err)
			continue
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			data, err := readLimited(resp.Body, loc, max)
			resp.Body.Close()
			if err == nil {
				return data, nil
			}
			last = err
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
			resp.Body.Close()
			return nil, fmt.Errorf("%s: server answered %s: %w", loc, resp.Status, fs.ErrNotExist)
		default:
			resp.Body.Close()
			last = fmt.Errorf("%w: %s: server answered %s", ErrHTTP, loc, resp.Status)
		}
	}
	return nil, last
}

func readLimited(r io.Reader, name string, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes: not what it should be", name, max)
	}
	return data, nil
}

// signer signs a backup's manifest and block map (Options.SignKey).
type signer struct {
	key *imgsig.PrivateKey
}

// newSigner loads opt.SignKey before a backup starts, so that a bad key
// or password fails at once, not after the copy.
func newSigner(opt *Options) (*signer, error) {
	if opt.PubKey != "" || opt.Manifest != "" {
		return nil, errors.New("-pubkey and -manifest check an image being restored; a backup signs with -sign KEY")
	}
	if opt.SignKey == "" {
		return &signer{}, nil
	}
	if opt.Dst == "-" {
		return nil, errors.New("-sign signs the manifest and block map written next to a backup file; a backup to stdout has none")
	}
	k, err := imgsig.LoadPrivateKey(opt.SignKey, opt.SignPasswordFile)
	if err != nil {
		return nil, err
	}
	return &signer{key: &k}, nil
}

// uncommentRaw turns the manifest's comment line with the uncompressed
// image's SHA-256 (uncompressedTag, which sha256sum -c skips) into a
// sha256sum line for imgsig.ParseManifest; other lines stay as they are.
func uncommentRaw(data []byte) []byte {
	lines := strings.SplitAfter(string(data), "\n")
	for i, l := range lines {
		if rest, ok := strings.CutPrefix(l, uncompressedTag); ok {
			lines[i] = rest
		}
	}
	return []byte(strings.Join(lines, ""))
}

// sign returns the signature of a backup file's data (nil without a key).
func (s *signer) sign(name string, data []byte) []byte {
	if s.key == nil {
		return nil
	}
	return imgsig.Sign(*s.key, name, data)
}
