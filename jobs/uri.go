package jobs

import (
	"fmt"
	"strings"
)

// URI schemes ParseURI accepts.
const (
	// SchemeFile is a path on the reading process's local file system.
	SchemeFile = "file"
	// SchemeS3 is an object in S3-compatible storage.
	SchemeS3 = "s3"
)

// maxURIBytes bounds a data URI; S3 keys are at most 1024 bytes.
const maxURIBytes = 2048

// ParseURI splits a data URI into its scheme, bucket (s3) and path or key:
//
//	file://jobs/data/x.csv -> ("file", "", "jobs/data/x.csv")  relative to the working directory
//	file:///abs/x.csv      -> ("file", "", "/abs/x.csv")
//	s3://bucket/key/x.csv  -> ("s3", "bucket", "key/x.csv")
//
// Everything after "file://" is the path, verbatim (no host part and no percent-decoding).
// The scheme is matched case-insensitively and returned in lower case. An empty URI, another
// scheme, a missing path, bucket or key, an invalid bucket name, a query or fragment ('?',
// '#'), spaces at either end and control characters are errors that name the problem.
func ParseURI(uri string) (scheme, bucketOrHost, path string, err error) {
	fail := func(format string, args ...any) (string, string, string, error) {
		return "", "", "", fmt.Errorf("invalid URI %q: %s", uri, fmt.Sprintf(format, args...))
	}
	if uri == "" {
		return fail("empty")
	}
	if len(uri) > maxURIBytes {
		return "", "", "", fmt.Errorf("invalid URI: %d bytes long; the limit is %d", len(uri), maxURIBytes)
	}
	if strings.TrimSpace(uri) != uri {
		return fail("leading or trailing spaces")
	}
	for _, r := range uri {
		if r < 0x20 || r == 0x7f {
			return fail("contains a control character")
		}
	}
	sch, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return fail("no scheme; write file://%s for a local file or s3://BUCKET/KEY for an object", strings.TrimPrefix(uri, "/"))
	}
	if strings.ContainsAny(rest, "?#") {
		return fail("query strings and fragments ('?', '#') are not supported")
	}
	switch strings.ToLower(sch) {
	case SchemeFile:
		if rest == "" || rest == "/" {
			return fail("no file path after file://")
		}
		return SchemeFile, "", rest, nil
	case SchemeS3:
		bucket, key, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return fail("no bucket after s3://")
		}
		if err := checkBucket(bucket); err != nil {
			return fail("%v", err)
		}
		if key == "" {
			return fail("no object key after the bucket (want s3://%s/KEY)", bucket)
		}
		if len(key) > 1024 {
			return fail("object key is %d bytes long; the limit is 1024", len(key))
		}
		return SchemeS3, bucket, key, nil
	default:
		return fail("unsupported scheme %q (want file:// or s3://)", sch)
	}
}

// checkBucket applies the S3 bucket naming rules: 3 to 63 characters of lowercase letters,
// digits, '.' and '-', starting and ending with a letter or digit.
func checkBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters long", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		if !alnum && c != '.' && c != '-' {
			return fmt.Errorf("bucket name %q may only hold lowercase letters, digits, '.' and '-'", b)
		}
		if !alnum && (i == 0 || i == len(b)-1) {
			return fmt.Errorf("bucket name %q must start and end with a letter or digit", b)
		}
	}
	return nil
}
