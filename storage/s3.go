package storage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

const (
	// DefaultS3PartSize is the multipart part size Put uses for large objects (16 MiB).
	DefaultS3PartSize = 16 << 20
	// DefaultS3Retries is how many times a failed request is retried by default.
	DefaultS3Retries = 5
	// MaxS3ConditionalPutSize is the largest object PutIfAbsent accepts: the limit of
	// one S3 PUT request (5 GiB). A create-only write is never split into a multipart
	// upload, because clients send the If-None-Match condition only with the first
	// request of a multipart upload and the completed upload would overwrite.
	MaxS3ConditionalPutSize = 5 << 30
	// MaxS3BufferedConditionalPutSize bounds the bytes PutIfAbsent holds in memory
	// when the reader cannot be re-read (no io.ReaderAt and io.Seeker) or the size is
	// unknown (64 MiB). Manifests, its main use, are far smaller.
	MaxS3BufferedConditionalPutSize = 64 << 20

	minS3PartSize = 5 << 20
	maxS3PartSize = 5 << 30
	maxS3Retries  = 50

	// Backoff of PutIfAbsent's own retry loop (its requests bypass minio-go's).
	conditionalRetryBase = 100 * time.Millisecond
	conditionalRetryCap  = 2 * time.Second
	// PutIfAbsent first checks whether the key exists when the body is larger.
	conditionalPrecheckSize = 1 << 20
)

// S3Config configures an S3-compatible object store (AWS S3, versitygw, Ceph RGW, …).
type S3Config struct {
	// Endpoint is "host[:port]" or a URL "http://host:port" / "https://host". The
	// scheme decides TLS; a bare host:port uses TLS.
	Endpoint string
	// Bucket holds the objects. NewS3 checks that it exists (see CreateBucket).
	Bucket string
	// Region is the bucket's region; empty takes $AWS_REGION, and when that is
	// unset too the client asks the server.
	Region string
	// AccessKey, SecretKey and SessionToken are the credentials. When AccessKey and
	// SecretKey are both empty, all three come from $AWS_ACCESS_KEY_ID,
	// $AWS_SECRET_ACCESS_KEY and $AWS_SESSION_TOKEN.
	AccessKey, SecretKey, SessionToken string
	// PathStyle forces path-style requests (http://host/bucket/key), which most
	// self-hosted servers need; false lets the client choose (virtual-host style for
	// AWS, path style for other endpoints).
	PathStyle bool
	// Prefix is an optional key prefix inside the bucket, so several clusters can
	// share one bucket. A missing trailing '/' is added.
	Prefix string
	// CreateBucket makes NewS3 create a missing bucket instead of failing.
	CreateBucket bool
	// Retries is how many times a request that failed with a 5xx status, SlowDown or
	// a connection error is retried (with capped exponential backoff); 0 disables
	// retries.
	Retries int
	// PartSize is the part size of multipart uploads (5 MiB to 5 GiB); 0 means
	// DefaultS3PartSize. Put sends objects up to this size in one request.
	PartSize uint64
}

// DefaultS3Config returns the defaults: DefaultS3Retries retries, DefaultS3PartSize
// parts, client-chosen addressing style. Endpoint and Bucket must still be set.
func DefaultS3Config() S3Config {
	return S3Config{Retries: DefaultS3Retries, PartSize: DefaultS3PartSize}
}

// s3Endpoint is a validated S3Config with its environment defaults applied.
type s3Endpoint struct {
	host         string // host[:port] for minio.New
	secure       bool
	region       string
	accessKey    string
	secretKey    string
	sessionToken string
	pathStyle    bool
	prefix       string
	retries      int
	partSize     uint64
}

// resolveS3Config validates cfg (except Bucket, which callers check themselves) and
// fills in the environment's credentials and region. Errors name the field.
func resolveS3Config(cfg S3Config) (s3Endpoint, error) {
	e := s3Endpoint{pathStyle: cfg.PathStyle, retries: cfg.Retries, partSize: cfg.PartSize}
	var err error
	if e.host, e.secure, err = parseS3Endpoint(cfg.Endpoint); err != nil {
		return e, err
	}

	e.accessKey, e.secretKey, e.sessionToken = cfg.AccessKey, cfg.SecretKey, cfg.SessionToken
	switch {
	case e.accessKey == "" && e.secretKey == "":
		e.accessKey = os.Getenv("AWS_ACCESS_KEY_ID")
		e.secretKey = os.Getenv("AWS_SECRET_ACCESS_KEY")
		if e.sessionToken == "" {
			e.sessionToken = os.Getenv("AWS_SESSION_TOKEN")
		}
		if e.accessKey == "" {
			return e, errors.New("storage: s3 config: AccessKey: empty and $AWS_ACCESS_KEY_ID is not set")
		}
		if e.secretKey == "" {
			return e, errors.New("storage: s3 config: SecretKey: empty and $AWS_SECRET_ACCESS_KEY is not set")
		}
	case e.accessKey == "":
		return e, errors.New("storage: s3 config: AccessKey: empty while SecretKey is set")
	case e.secretKey == "":
		return e, errors.New("storage: s3 config: SecretKey: empty while AccessKey is set")
	}

	e.region = cfg.Region
	if e.region == "" {
		e.region = os.Getenv("AWS_REGION")
	}

	if e.prefix, err = normalizeS3Prefix(cfg.Prefix); err != nil {
		return e, err
	}
	if cfg.Retries < 0 || cfg.Retries > maxS3Retries {
		return e, fmt.Errorf("storage: s3 config: Retries %d: want 0 to %d", cfg.Retries, maxS3Retries)
	}
	if e.partSize == 0 {
		e.partSize = DefaultS3PartSize
	}
	if e.partSize < minS3PartSize || e.partSize > maxS3PartSize {
		return e, fmt.Errorf("storage: s3 config: PartSize %d: want %d (5 MiB) to %d (5 GiB)", cfg.PartSize, minS3PartSize, maxS3PartSize)
	}
	return e, nil
}

// parseS3Endpoint accepts "host[:port]" (TLS) or an http/https URL without a path.
func parseS3Endpoint(endpoint string) (host string, secure bool, err error) {
	if endpoint == "" {
		return "", false, errors.New("storage: s3 config: Endpoint: empty (want host:port or http(s)://host:port)")
	}
	secure = true
	host = endpoint
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil {
			return "", false, fmt.Errorf("storage: s3 config: Endpoint %q: %w", endpoint, err)
		}
		switch u.Scheme {
		case "https":
		case "http":
			secure = false
		default:
			return "", false, fmt.Errorf("storage: s3 config: Endpoint %q: scheme %q: want http or https", endpoint, u.Scheme)
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return "", false, fmt.Errorf("storage: s3 config: Endpoint %q: want only scheme://host[:port], without path, query or user", endpoint)
		}
		host = u.Host
	}
	if host == "" {
		return "", false, fmt.Errorf("storage: s3 config: Endpoint %q: empty host", endpoint)
	}
	if strings.ContainsAny(host, "/?#@ ") {
		return "", false, fmt.Errorf("storage: s3 config: Endpoint %q: not host:port (a URL needs http:// or https://)", endpoint)
	}
	if h, p, splitErr := net.SplitHostPort(host); splitErr == nil {
		if h == "" || p == "" {
			return "", false, fmt.Errorf("storage: s3 config: Endpoint %q: empty host or port", endpoint)
		}
	}
	return host, secure, nil
}

// normalizeS3Prefix validates a bucket key prefix and ends it with '/'.
func normalizeS3Prefix(prefix string) (string, error) {
	if prefix == "" {
		return "", nil
	}
	trimmed := strings.TrimSuffix(prefix, "/")
	if err := ValidateKey(trimmed); err != nil {
		return "", fmt.Errorf("storage: s3 config: Prefix %q: %w", prefix, err)
	}
	return trimmed + "/", nil
}

// validateS3Bucket checks a bucket name against the S3 naming rules.
func validateS3Bucket(bucket string) error {
	if bucket == "" {
		return errors.New("storage: s3 config: Bucket: empty")
	}
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return fmt.Errorf("storage: s3 config: Bucket %q: %w", bucket, err)
	}
	return nil
}

// newClient builds a minio client; maxAttempts of 1 disables its retries.
func (e s3Endpoint) newClient(transport http.RoundTripper, maxAttempts int) (*minio.Client, error) {
	lookup := minio.BucketLookupAuto
	if e.pathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(e.host, &minio.Options{
		Creds:        credentials.NewStaticV4(e.accessKey, e.secretKey, e.sessionToken),
		Secure:       e.secure,
		Transport:    transport,
		Region:       e.region,
		BucketLookup: lookup,
		MaxRetries:   maxAttempts,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: s3 client for %q: %w", e.host, err)
	}
	return c, nil
}

// S3 implements Blob on a bucket of an S3-compatible object store. Key "a/b" is the
// object Prefix+"a/b". Each Put is one atomic object write (a single PUT, or a
// multipart upload above the part size, which S3 also publishes atomically); an
// upload that fails is aborted, and uploads left by crashed processes are removed by
// AbortStaleUploads. S3 is safe for concurrent use.
type S3 struct {
	client *minio.Client // requests with minio-go's bounded retries
	once   *minio.Client // no built-in retries: PutIfAbsent runs its own loop
	bucket string
	prefix string
	e      s3Endpoint
	log    *slog.Logger
}

var _ Blob = (*S3)(nil)

// NewS3 validates cfg, connects to the endpoint and checks that the bucket exists,
// creating it when cfg.CreateBucket is set. Configuration errors name the field.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if err := validateS3Bucket(cfg.Bucket); err != nil {
		return nil, err
	}
	e, err := resolveS3Config(cfg)
	if err != nil {
		return nil, err
	}
	transport, err := minio.DefaultTransport(e.secure)
	if err != nil {
		return nil, fmt.Errorf("storage: s3 transport: %w", err)
	}
	client, err := e.newClient(transport, e.retries+1)
	if err != nil {
		return nil, err
	}
	once, err := e.newClient(transport, 1)
	if err != nil {
		return nil, err
	}
	s := &S3{
		client: client, once: once, bucket: cfg.Bucket, prefix: e.prefix, e: e,
		log: slog.Default().With("component", "storage.s3", "bucket", cfg.Bucket, "prefix", e.prefix),
	}
	if err := s.ensureBucket(ctx, cfg.CreateBucket); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *S3) ensureBucket(ctx context.Context, create bool) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		hint := ""
		switch resp := minio.ToErrorResponse(err); {
		case resp.StatusCode == http.StatusForbidden, resp.Code == "AccessDenied",
			resp.Code == "SignatureDoesNotMatch", resp.Code == "InvalidAccessKeyId":
			hint = " (check AccessKey, SecretKey, SessionToken and Region)"
		}
		return fmt.Errorf("storage: s3 bucket %q at %s: %w%s", s.bucket, s.e.host, err, hint)
	}
	if ok {
		return nil
	}
	if !create {
		return fmt.Errorf("storage: s3 bucket %q at %s: does not exist (create it, or set CreateBucket)", s.bucket, s.e.host)
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.e.region})
	if err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" {
			return nil // created concurrently by another of our processes
		}
		return fmt.Errorf("storage: s3 create bucket %q at %s: %w", s.bucket, s.e.host, err)
	}
	s.log.Info("created bucket", "endpoint", s.e.host)
	return nil
}

// Bucket returns the bucket's name.
func (s *S3) Bucket() string { return s.bucket }

// Prefix returns the key prefix inside the bucket ("" or ending in '/').
func (s *S3) Prefix() string { return s.prefix }

// object maps a validated key to its object name.
func (s *S3) object(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

// errf formats an error that names the operation, the bucket and the key.
func (s *S3) errf(op, key string, err error) error {
	return fmt.Errorf("storage: s3 %s %q in bucket %q: %w", op, key, s.bucket, err)
}

// Put implements Blob. Objects up to the part size go in one PUT, larger ones and
// those of unknown size as a multipart upload (aborted when it fails). A seekable
// reader (io.Seeker) lets failed requests be retried.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	name, err := s.object(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return s.errf("put", key, err)
	}
	if size < 0 {
		// Learn whether the object is empty, which takes the single-request path below.
		br := bufio.NewReaderSize(r, 16)
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			size = 0
		}
		r = br
	}
	info, err := s.client.PutObject(ctx, s.bucket, name, r, size, minio.PutObjectOptions{
		PartSize:             s.e.partSize,
		ContentType:          "application/octet-stream",
		DisableContentSha256: unsignedEmptyBody(size),
	})
	if err != nil {
		return s.errf("put", key, s.mapErr(err))
	}
	if size >= 0 && info.Size != size {
		return s.errf("put", key, fmt.Errorf("size mismatch: declared %d bytes, stored %d", size, info.Size))
	}
	s.log.Debug("put", "key", key, "bytes", info.Size)
	return nil
}

// PutIfAbsent implements Blob with one conditional PUT (If-None-Match: *), never a
// multipart upload, so objects are limited to MaxS3ConditionalPutSize. A reader that
// is not an io.ReaderAt with an io.Seeker, or an unknown size, is buffered in memory
// up to MaxS3BufferedConditionalPutSize so the request can be retried.
//
// The server answers 412 Precondition Failed when the key exists (the error wraps
// ErrExists) and may answer 409 ConditionalRequestConflict while a concurrent write
// of the key is in flight; that is retried and, when it persists, also reported as
// ErrExists. After an attempt that failed without a clear answer (connection error,
// 5xx), the object may have been written by that very attempt: PutIfAbsent then
// looks at the stored object and reports success when its ETag is the MD5 of its own
// bytes, ErrExists when it holds other bytes, and retries when it is absent. Bodies
// above 1 MiB are not sent when the key already exists.
func (s *S3) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	name, err := s.object(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return s.errf("put-if-absent", key, err)
	}
	body, err := conditionalBody(r, size)
	if err != nil {
		return s.errf("put-if-absent", key, err)
	}

	if body.Size() > conditionalPrecheckSize {
		// Do not send a large body whose write is bound to fail.
		if found, _, err := s.storedObject(ctx, name, nil); err == nil && found {
			return s.errf("put-if-absent", key, ErrExists)
		}
	}

	ambiguous := false // an earlier attempt may have reached the server
	var lastErr error
	for attempt := 0; attempt <= s.e.retries; attempt++ {
		if attempt > 0 {
			if err := sleepCtx(ctx, backoff(attempt)); err != nil {
				return s.errf("put-if-absent", key, fmt.Errorf("%w (after %v)", err, lastErr))
			}
		}
		opts := minio.PutObjectOptions{
			DisableMultipart:     true,
			ContentType:          "application/octet-stream",
			DisableContentSha256: unsignedEmptyBody(body.Size()),
		}
		opts.SetMatchETagExcept("*")
		_, err := s.once.PutObject(ctx, s.bucket, name, io.NewSectionReader(body, 0, body.Size()), body.Size(), opts)
		if err == nil {
			s.log.Debug("put-if-absent", "key", key, "bytes", body.Size(), "attempts", attempt+1)
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return s.errf("put-if-absent", key, cerr)
		}
		resp := minio.ToErrorResponse(err)
		switch {
		case resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed":
			if !ambiguous {
				return s.errf("put-if-absent", key, ErrExists)
			}
			found, mine, serr := s.storedObject(ctx, name, body)
			if serr != nil {
				return s.errf("put-if-absent", key, fmt.Errorf("object exists after an attempt whose answer was lost, and checking whether it is ours failed: %w", serr))
			}
			if found && mine {
				s.log.Info("put-if-absent: an earlier attempt had committed the object", "key", key, "attempts", attempt+1)
				return nil
			}
			return s.errf("put-if-absent", key, ErrExists)
		case resp.StatusCode == http.StatusConflict || resp.Code == "ConditionalRequestConflict":
			lastErr = fmt.Errorf("%w: conflicting concurrent write (%v)", ErrExists, err)
		case isRetryableS3Error(resp):
			// The attempt may or may not have taken effect, and a server may also
			// refuse a conditional PUT early and reset the connection while the
			// body is still being sent (versitygw does): look before retrying.
			ambiguous = true
			lastErr = err
			found, mine, serr := s.storedObject(ctx, name, body)
			switch {
			case serr != nil:
				s.log.Debug("put-if-absent: retrying; stat failed", "key", key, "attempt", attempt+1, "err", err, "statErr", serr)
			case found && mine:
				s.log.Info("put-if-absent: an attempt whose answer was lost had committed the object", "key", key, "attempts", attempt+1, "err", err)
				return nil
			case found:
				return s.errf("put-if-absent", key, ErrExists)
			default:
				s.log.Debug("put-if-absent: retrying", "key", key, "attempt", attempt+1, "err", err)
			}
		default:
			return s.errf("put-if-absent", key, s.mapErr(err))
		}
	}
	return s.errf("put-if-absent", key, fmt.Errorf("giving up after %d attempts: %w", s.e.retries+1, lastErr))
}

// unsignedEmptyBody reports whether a PUT of size bytes is sent with an unsigned
// payload (minio-go's DisableContentSha256): only an empty one. Over plain HTTP
// minio-go signs a PUT's body with the streaming (aws-chunked) signature; for an
// empty body it then sends "Transfer-Encoding: chunked" with an
// aws-chunked frame inside. versitygw (v1.8.0) does not read that body, answers the
// PUT, and parses the left-over bytes as a next request on the same keep-alive
// connection, answering it with 400 BadRequest, which a client may take as the answer
// to its next request. With DisableContentSha256 an empty PUT is a plain request
// with Content-Length: 0 and UNSIGNED-PAYLOAD, which every server handles; there is
// no payload whose integrity the signature could protect.
func unsignedEmptyBody(size int64) bool { return size == 0 }

// conditionalBody returns r as a re-readable body of known size for PutIfAbsent.
func conditionalBody(r io.Reader, size int64) (*io.SectionReader, error) {
	if size > MaxS3ConditionalPutSize {
		return nil, fmt.Errorf("%d bytes: larger than %d, the limit of one conditional PUT (a multipart upload would lose the create-only condition)", size, int64(MaxS3ConditionalPutSize))
	}
	if ra, ok := r.(io.ReaderAt); ok && size >= 0 {
		if sk, ok := r.(io.Seeker); ok {
			off, err := sk.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, fmt.Errorf("seek: %w", err)
			}
			return io.NewSectionReader(ra, off, size), nil
		}
	}
	if size > MaxS3BufferedConditionalPutSize {
		return nil, fmt.Errorf("%d bytes from a reader that cannot be re-read: larger than %d, the most that is buffered (pass an io.ReaderAt with io.Seeker)", size, MaxS3BufferedConditionalPutSize)
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxS3BufferedConditionalPutSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxS3BufferedConditionalPutSize {
		return nil, fmt.Errorf("more than %d bytes of unknown size: too large to buffer (pass the size and an io.ReaderAt with io.Seeker)", MaxS3BufferedConditionalPutSize)
	}
	if size >= 0 && int64(len(data)) != size {
		return nil, fmt.Errorf("size mismatch: declared %d bytes, read %d", size, len(data))
	}
	return io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))), nil
}

// storedObject reports whether the object name exists and, when body is not nil,
// whether it holds exactly body, judged by size and by the ETag, which S3 sets to the
// MD5 of a single-PUT object's bytes (without SSE-KMS; a non-MD5 ETag never matches).
// Another writer's identical bytes count as ours: the outcome is the same object.
func (s *S3) storedObject(ctx context.Context, name string, body *io.SectionReader) (found, mine bool, err error) {
	info, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		if isS3NotFound(err, false) {
			return false, false, nil
		}
		return false, false, err
	}
	if body == nil || info.Size != body.Size() {
		return true, false, nil
	}
	h := md5.New()
	if _, err := io.Copy(h, io.NewSectionReader(body, 0, body.Size())); err != nil {
		return true, false, err
	}
	return true, strings.Trim(info.ETag, `"`) == hex.EncodeToString(h.Sum(nil)), nil
}

// isRetryableS3Error reports the failures worth another attempt: connection errors
// (no HTTP status), throttling and server errors.
func isRetryableS3Error(resp minio.ErrorResponse) bool {
	switch resp.Code {
	case "SlowDown", "SlowDownWrite", "InternalError", "RequestTimeout", "Throttling",
		"ThrottlingException", "RequestLimitExceeded", "RequestThrottled", "ServiceUnavailable":
		return true
	}
	switch resp.StatusCode {
	case 0, http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// backoff is the wait before retry attempt n (n >= 1): full jitter over a capped
// exponential.
func backoff(n int) time.Duration {
	d := conditionalRetryBase << min(n-1, 10)
	if d > conditionalRetryCap {
		d = conditionalRetryCap
	}
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// isS3NotFound reports a missing key (or, with bucketToo, a missing bucket).
func isS3NotFound(err error, bucketToo bool) bool {
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "NoSuchKey", "NotFound":
		return true
	case "NoSuchBucket":
		return bucketToo
	}
	return false
}

// mapErr turns a missing key into ErrNotFound and keeps every other error.
func (s *S3) mapErr(err error) error {
	if isS3NotFound(err, false) {
		return fmt.Errorf("%w (%v)", ErrNotFound, err)
	}
	return err
}

// Get implements Blob. The GET request is made before Get returns, so a missing key
// is reported by Get itself, not by the first Read.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	name, err := s.object(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, s.errf("get", key, err)
	}
	rc, err := openS3Object(ctx, s.client, s.bucket, name)
	if err != nil {
		if isS3NotFound(err, false) {
			return nil, s.errf("get", key, ErrNotFound)
		}
		return nil, s.errf("get", key, err)
	}
	return rc, nil
}

// openS3Object issues the GET of bucket/name and returns its body.
func openS3Object(ctx context.Context, c *minio.Client, bucket, name string) (io.ReadCloser, error) {
	obj, err := c.GetObject(ctx, bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	// Stat makes the first request of a minio Object, so errors surface here.
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		return nil, err
	}
	return obj, nil
}

// Stat implements Blob.
func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	name, err := s.object(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, s.errf("stat", key, err)
	}
	info, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		if isS3NotFound(err, false) {
			return ObjectInfo{}, s.errf("stat", key, ErrNotFound)
		}
		return ObjectInfo{}, s.errf("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: info.Size, ModTime: info.LastModified}, nil
}

// List implements Blob. prefix is a key prefix, not a directory; the listing is
// recursive and sorted by key. Names that are not valid keys (such as directory
// markers ending in '/') are skipped.
func (s *S3) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine on an early return
	out := []ObjectInfo{}
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("storage: s3 list %q in bucket %q: %w", prefix, s.bucket, obj.Err)
		}
		key, ok := strings.CutPrefix(obj.Key, s.prefix)
		if !ok || ValidateKey(key) != nil {
			s.log.Debug("list: skipping object that is not a key", "object", obj.Key)
			continue
		}
		out = append(out, ObjectInfo{Key: key, Size: obj.Size, ModTime: obj.LastModified})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: s3 list %q in bucket %q: %w", prefix, s.bucket, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Blob; deleting an absent key is not an error.
func (s *S3) Delete(ctx context.Context, key string) error {
	name, err := s.object(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return s.errf("delete", key, err)
	}
	if err := s.client.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{}); err != nil && !isS3NotFound(err, false) {
		return s.errf("delete", key, err)
	}
	s.log.Debug("delete", "key", key)
	return nil
}

// URI implements Blob: "s3://bucket/" followed by the prefix and the key.
func (s *S3) URI(key string) string {
	return "s3://" + s.bucket + "/" + s.prefix + key
}

// AbortStaleUploads aborts the incomplete multipart uploads under the prefix that
// were started more than olderThan ago (uploads of crashed writers, which hold storage
// until aborted) and returns how many it aborted. It goes on after a failed abort and
// returns the errors joined.
func (s *S3) AbortStaleUploads(ctx context.Context, olderThan time.Duration) (int, error) {
	return s.AbortStaleUploadsUnder(ctx, "", olderThan)
}

// AbortStaleUploadsUnder is AbortStaleUploads limited to the uploads of keys that start
// with keyPrefix (a key prefix inside the store, as for List).
func (s *S3) AbortStaleUploadsUnder(ctx context.Context, keyPrefix string, olderThan time.Duration) (int, error) {
	if err := validatePrefix(keyPrefix); err != nil {
		return 0, err
	}
	if olderThan < 0 {
		return 0, fmt.Errorf("storage: s3 abort stale uploads in bucket %q: negative age %v", s.bucket, olderThan)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cutoff := time.Now().Add(-olderThan)
	core := minio.Core{Client: s.client}
	var errs []error
	aborted := 0
	for up := range s.client.ListIncompleteUploads(ctx, s.bucket, s.prefix+keyPrefix, true) {
		if up.Err != nil {
			errs = append(errs, fmt.Errorf("storage: s3 list uploads in bucket %q: %w", s.bucket, up.Err))
			break
		}
		if !up.Initiated.Before(cutoff) {
			continue
		}
		if err := core.AbortMultipartUpload(ctx, s.bucket, up.Key, up.UploadID); err != nil {
			if minio.ToErrorResponse(err).Code == "NoSuchUpload" {
				continue // completed or aborted meanwhile
			}
			errs = append(errs, fmt.Errorf("storage: s3 abort upload %s of %q in bucket %q: %w", up.UploadID, up.Key, s.bucket, err))
			continue
		}
		aborted++
		s.log.Info("aborted stale multipart upload", "object", up.Key, "uploadID", up.UploadID, "initiated", up.Initiated)
	}
	return aborted, errors.Join(errs...)
}
