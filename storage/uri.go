package storage

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/minio/minio-go/v7"
)

// OpenURI opens the object a job spec names: "file:///abs/path" (through OpenFileURI)
// or "s3://bucket/key", read with the endpoint, credentials, region and addressing
// style of s3 (its Bucket and Prefix are ignored: the URI names the bucket and the
// whole key). The GET is made before OpenURI returns; a missing object or bucket gives
// an error wrapping ErrNotFound that names the URI.
func OpenURI(ctx context.Context, uri string, s3 S3Config) (io.ReadCloser, error) {
	switch {
	case strings.HasPrefix(uri, "file://"):
		rc, _, err := OpenFileURI(uri)
		return rc, err
	case strings.HasPrefix(uri, "s3://"):
		return openS3URI(ctx, uri, s3)
	default:
		return nil, fmt.Errorf("storage: open %q: unsupported URI (want file:// or s3://)", uri)
	}
}

// ParseS3URI splits "s3://bucket/key" and validates both parts.
func ParseS3URI(uri string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(uri, "s3://")
	if !ok {
		return "", "", fmt.Errorf("storage: %q: not an s3:// URI", uri)
	}
	bucket, key, ok = strings.Cut(rest, "/")
	if !ok || key == "" {
		return "", "", fmt.Errorf("storage: %q: want s3://bucket/key", uri)
	}
	if err := validateS3Bucket(bucket); err != nil {
		return "", "", fmt.Errorf("storage: %q: %w", uri, err)
	}
	if err := ValidateKey(key); err != nil {
		return "", "", fmt.Errorf("storage: %q: %w", uri, err)
	}
	return bucket, key, nil
}

func openS3URI(ctx context.Context, uri string, cfg S3Config) (io.ReadCloser, error) {
	bucket, key, err := ParseS3URI(uri)
	if err != nil {
		return nil, err
	}
	cfg.Prefix = ""
	e, err := resolveS3Config(cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: open %q: %w", uri, err)
	}
	transport, err := minio.DefaultTransport(e.secure)
	if err != nil {
		return nil, fmt.Errorf("storage: open %q: %w", uri, err)
	}
	client, err := e.newClient(transport, e.retries+1)
	if err != nil {
		return nil, fmt.Errorf("storage: open %q: %w", uri, err)
	}
	rc, err := openS3Object(ctx, client, bucket, key)
	if err != nil {
		if isS3NotFound(err, true) {
			return nil, fmt.Errorf("storage: open %q: %w (%v)", uri, ErrNotFound, err)
		}
		return nil, fmt.Errorf("storage: open %q: %w", uri, err)
	}
	return rc, nil
}
