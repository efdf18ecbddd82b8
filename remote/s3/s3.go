// Package s3 is the s3:// backend of package remote, on
// github.com/minio/minio-go/v7: s3://BUCKET/KEY?endpoint=https://HOST[:PORT]
// &region=REGION&style=path|virtual (default: path-style for an endpoint
// that is an IP address or not AWS, virtual-host style for AWS). Reads
// are ranged GETs (a resume asks for the same ETag); an upload is a
// multipart upload completed only by Commit and aborted on failure, so no
// half-written object ever appears under the key.
//
// Credentials, first found wins: s3_access_key=/s3_secret_key= of the
// credentials file, the AWS_* environment variables, ~/.aws/credentials
// (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE). The endpoint also comes from
// AWS_ENDPOINT_URL, the region from AWS_REGION / AWS_DEFAULT_REGION.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/remote"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// PartSize is the first multipart part size; it doubles every 1000 parts
// (S3 allows 10000), so 16 MiB parts reach 160 GB before they grow.
var PartSize int64 = 16 << 20

// Backend reaches one bucket.
type Backend struct {
	u      *remote.URL
	opt    *remote.Options
	bucket string
	core   *minio.Core
	mu     sync.Mutex
	etag0  string // the object's ETag when first seen
}

// New returns the backend of u (scheme s3).
func New(u *remote.URL, opt *remote.Options) (*Backend, error) {
	ep := u.Query.Get("endpoint")
	if ep == "" {
		ep = os.Getenv("AWS_ENDPOINT_URL_S3")
	}
	if ep == "" {
		ep = os.Getenv("AWS_ENDPOINT_URL")
	}
	if ep == "" {
		ep = "https://s3.amazonaws.com"
	}
	e, err := url.Parse(ep)
	if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
		return nil, fmt.Errorf("%s: ?endpoint= must be http(s)://HOST[:PORT]", u)
	}
	region := u.Query.Get("region")
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	lookup := minio.BucketLookupAuto
	switch u.Query.Get("style") {
	case "path":
		lookup = minio.BucketLookupPath
	case "virtual", "vhost", "virtual-host":
		lookup = minio.BucketLookupDNS
	case "":
	default:
		return nil, fmt.Errorf("%s: ?style= is path or virtual", u)
	}
	c := opt.Cred
	var providers []credentials.Provider
	if c.S3AccessKey != "" || c.S3SecretKey != "" {
		providers = append(providers, &credentials.Static{Value: credentials.Value{
			AccessKeyID: c.S3AccessKey, SecretAccessKey: c.S3SecretKey, SessionToken: c.S3SessionToken, SignerType: credentials.SignatureV4}})
	}
	providers = append(providers, &credentials.EnvAWS{}, &credentials.FileAWSCredentials{})
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: opt.ConnectTimeout, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout:   opt.ConnectTimeout,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   8,     // imaging's ranged reads: up to 8 at once
		ForceAttemptHTTP2:     false, // separate TCP streams, each with its window
		DisableCompression:    true,
	}
	core, err := minio.NewCore(e.Host, &minio.Options{
		Creds: credentials.NewChainCredentials(providers), Secure: e.Scheme == "https",
		Transport: tr, Region: region, BucketLookup: lookup, MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %v", u, err)
	}
	return &Backend{u: u, opt: opt, bucket: u.Host, core: core}, nil
}

// Connect implements remote.Backend (HTTP connects per request).
func (b *Backend) Connect(context.Context) (remote.Session, error) { return &session{b}, nil }

type session struct{ b *Backend }

func (s *session) Close() error { return nil }

// mapErr turns S3 error codes into remote's kinds.
func (b *Backend) mapErr(ctx context.Context, err error, key string) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	if errors.As(err, &ne) && !ne.Timeout() && strings.Contains(err.Error(), "connect") {
		return fmt.Errorf("%w: %v", remote.ErrUnreachable, err)
	}
	er := minio.ToErrorResponse(err)
	switch er.Code {
	case "NoSuchBucket":
		return fmt.Errorf("%w: bucket %q does not exist", remote.ErrNotFound, b.bucket)
	case "NoSuchKey", "NotFound":
		if ok, berr := b.core.BucketExists(ctx, b.bucket); berr == nil && !ok {
			return fmt.Errorf("%w: bucket %q does not exist", remote.ErrNotFound, b.bucket)
		}
		return fmt.Errorf("%w: bucket %q has no object %q", remote.ErrNotFound, b.bucket, key)
	case "AccessDenied", "AllAccessDisabled":
		return fmt.Errorf("%w: bucket %q object %q: %s", remote.ErrPermission, b.bucket, key, er.Message)
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidSecurity", "AuthorizationHeaderMalformed":
		return fmt.Errorf("%w: %s: %s (check s3_access_key/s3_secret_key or AWS_* credentials)", remote.ErrAuth, er.Code, er.Message)
	case "EntityTooLarge", "QuotaExceeded", "XMinioStorageFull", "StorageFull":
		return fmt.Errorf("%w: %s: %s", remote.ErrNoSpace, er.Code, er.Message)
	case "PreconditionFailed":
		return fmt.Errorf("%w: the object changed on the server during the transfer (ETag)", remote.ErrProtocol)
	}
	if er.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%w: %v", remote.ErrPermission, err)
	}
	if er.StatusCode == http.StatusInsufficientStorage {
		return fmt.Errorf("%w: %v", remote.ErrNoSpace, err)
	}
	return err
}

func (s *session) Size(ctx context.Context, key string) (int64, error) {
	oi, err := s.b.core.StatObject(ctx, s.b.bucket, key, minio.StatObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).StatusCode == http.StatusForbidden {
		// A HEAD answer has no body to say why: a GET of one byte tells a
		// wrong key from a missing permission.
		var o minio.GetObjectOptions
		o.SetRange(0, 0)
		if rc, _, _, gerr := s.b.core.GetObject(ctx, s.b.bucket, key, o); gerr != nil {
			err = gerr
		} else {
			rc.Close()
		}
	}
	if err != nil {
		return 0, s.b.mapErr(ctx, err, key)
	}
	s.b.etag(oi.ETag)
	return oi.Size, nil
}

// etag remembers the object's first ETag so a resume reads the same object.
func (b *Backend) etag(e string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.etag0 == "" {
		b.etag0 = e
	}
	return b.etag0
}

type body struct {
	rc  io.ReadCloser
	b   *Backend
	ctx context.Context
	key string
}

func (r *body) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if err != nil && err != io.EOF {
		err = r.b.mapErr(r.ctx, err, r.key)
	}
	return n, err
}

func (r *body) Close() error { return r.rc.Close() }

func (s *session) ReadFrom(ctx context.Context, key string, off int64) (io.ReadCloser, error) {
	var o minio.GetObjectOptions
	if off > 0 {
		if err := o.SetRange(off, 0); err != nil {
			return nil, err
		}
		if e := s.b.etag(""); e != "" {
			o.SetMatchETag(e)
		}
	}
	rc, _, _, err := s.b.core.GetObject(ctx, s.b.bucket, key, o)
	if err != nil {
		return nil, s.b.mapErr(ctx, err, key)
	}
	return &body{rc: rc, b: s.b, ctx: ctx, key: key}, nil
}

// OpenRanges implements remote.RangeBackend: ranged GETs, each asking
// for the ETag the object had when opened (If-Match) and checked to
// answer with that ETag, the range asked for and the same total size. An
// object without an ETag (a server that computes none, such as versitygw
// for files put in its directory by other means) is checked by its
// Last-Modified instead, as HTTP ranges are.
func (b *Backend) OpenRanges(ctx context.Context, key string) (remote.Ranges, error) {
	oi, err := b.core.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		// Size tells a wrong key from a missing permission.
		_, err = (&session{b}).Size(ctx, key)
		if err == nil {
			err = fmt.Errorf("bucket %q object %q: the server answered HEAD with an error and GET without", b.bucket, key)
		}
		return nil, err
	}
	if oi.ETag == "" && oi.LastModified.IsZero() {
		return nil, fmt.Errorf("%w: the server sends neither ETag nor Last-Modified for %q, so ranges could not be checked to come from the same object", remote.ErrNoRanges, key)
	}
	return &ranges{b: b, key: key, size: oi.Size, etag: oi.ETag, mod: oi.LastModified}, nil
}

type ranges struct {
	b    *Backend
	key  string
	size int64
	etag string
	mod  time.Time
}

func (r *ranges) Size() int64  { return r.size }
func (r *ranges) Close() error { return nil }

func (r *ranges) ReadRange(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	var o minio.GetObjectOptions
	if err := o.SetRange(off, end-1); err != nil {
		return nil, err
	}
	if r.etag != "" {
		o.SetMatchETag(r.etag)
	}
	rc, oi, h, err := r.b.core.GetObject(ctx, r.b.bucket, r.key, o)
	if err != nil {
		if minio.ToErrorResponse(err).Code == "PreconditionFailed" {
			return nil, fmt.Errorf("%w: bucket %q object %q: its ETag is no longer %q (If-Match failed)", remote.ErrChanged, r.b.bucket, r.key, r.etag)
		}
		return nil, r.b.mapErr(ctx, err, r.key)
	}
	fail := func(format string, args ...any) (io.ReadCloser, error) {
		rc.Close()
		return nil, fmt.Errorf(format, args...)
	}
	switch {
	case oi.ETag != r.etag:
		return fail("%w: bucket %q object %q: ETag %q, was %q", remote.ErrChanged, r.b.bucket, r.key, oi.ETag, r.etag)
	case !oi.LastModified.Equal(r.mod):
		return fail("%w: bucket %q object %q: Last-Modified %v, was %v", remote.ErrChanged, r.b.bucket, r.key, oi.LastModified, r.mod)
	}
	start, last, total, ok := contentRange(h.Get("Content-Range"))
	switch {
	case !ok || start != off || last != end-1 || oi.Size != end-off:
		return fail("%w: bytes %d-%d of %q: bad answer (Content-Range %q, Content-Length %d)", remote.ErrProtocol, off, end-1, r.key, h.Get("Content-Range"), oi.Size)
	case total != r.size:
		return fail("%w: bucket %q object %q: its size is now %d, was %d", remote.ErrChanged, r.b.bucket, r.key, total, r.size)
	}
	return &body{rc: rc, b: r.b, ctx: ctx, key: r.key}, nil
}

// contentRange parses "bytes FIRST-LAST/TOTAL".
func contentRange(s string) (first, last, total int64, ok bool) {
	var n int
	if n, _ = fmt.Sscanf(strings.TrimSpace(s), "bytes %d-%d/%d", &first, &last, &total); n != 3 {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

func (s *session) Create(ctx context.Context, key string) (remote.Upload, error) {
	id, err := s.b.core.NewMultipartUpload(ctx, s.b.bucket, key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return nil, s.b.mapErr(ctx, err, key)
	}
	return &upload{ctx: ctx, b: s.b, key: key, id: id, size: PartSize}, nil
}

// Remove deletes the object (S3 answers a missing key with success: it
// is looked up first so that ErrNotFound is said).
func (s *session) Remove(ctx context.Context, key string) error {
	if _, err := s.Size(ctx, key); err != nil {
		return err
	}
	return s.b.mapErr(ctx, s.b.core.RemoveObject(ctx, s.b.bucket, key, minio.RemoveObjectOptions{}), key)
}

// upload is a multipart upload: parts of size bytes are sent as they fill.
type upload struct {
	ctx   context.Context
	b     *Backend
	key   string
	id    string
	buf   []byte
	size  int64
	parts []minio.CompletePart
	done  bool
}

func (u *upload) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if u.buf == nil {
			u.buf = make([]byte, 0, u.size)
		}
		k := min(len(p), cap(u.buf)-len(u.buf))
		u.buf = append(u.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(u.buf) == cap(u.buf) {
			if err := u.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (u *upload) flush() error {
	num := len(u.parts) + 1
	if num > 10000 {
		return fmt.Errorf("%w: more than 10000 parts", remote.ErrNoSpace)
	}
	op, err := u.b.core.PutObjectPart(u.ctx, u.b.bucket, u.key, u.id, num, bytes.NewReader(u.buf), int64(len(u.buf)), minio.PutObjectPartOptions{})
	if err != nil {
		return u.b.mapErr(u.ctx, err, u.key)
	}
	u.parts = append(u.parts, minio.CompletePart{PartNumber: num, ETag: op.ETag})
	if len(u.parts)%1000 == 0 && u.size < 5<<30 {
		u.size *= 2
		u.buf = nil
	} else {
		u.buf = u.buf[:0]
	}
	return nil
}

// Flush uploads what is buffered as the last part; the object appears
// only with Commit.
func (u *upload) Flush() error {
	if len(u.buf) > 0 || len(u.parts) == 0 {
		if err := u.flush(); err != nil {
			return err
		}
	}
	u.buf = nil
	return nil
}

func (u *upload) Commit() error {
	if u.done {
		return errors.New("commit after abort")
	}
	if err := u.Flush(); err != nil {
		return err
	}
	if _, err := u.b.core.CompleteMultipartUpload(u.ctx, u.b.bucket, u.key, u.id, u.parts, minio.PutObjectOptions{}); err != nil {
		return u.b.mapErr(u.ctx, err, u.key)
	}
	u.done = true
	return nil
}

func (u *upload) Abort() error {
	u.buf = nil
	if u.done {
		return nil
	}
	u.done = true
	// A cancelled context must not keep the abort from being sent.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return u.b.mapErr(ctx, u.b.core.AbortMultipartUpload(ctx, u.b.bucket, u.key, u.id), u.key)
}
