package jobs

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in                         string
		scheme, bucket, path, werr string
	}{
		{in: "file://jobs/data/x.csv", scheme: "file", path: "jobs/data/x.csv"},
		{in: "file:///abs/x.csv", scheme: "file", path: "/abs/x.csv"},
		{in: "file://../up/x.csv", scheme: "file", path: "../up/x.csv"},
		{in: "FILE://x.csv", scheme: "file", path: "x.csv"},
		{in: "s3://bucket/key", scheme: "s3", bucket: "bucket", path: "key"},
		{in: "s3://my.bucket-1/a/b/c.idx", scheme: "s3", bucket: "my.bucket-1", path: "a/b/c.idx"},
		{in: "S3://bkt/k", scheme: "s3", bucket: "bkt", path: "k"},
		{in: "", werr: "empty"},
		{in: "jobs/data/x.csv", werr: "write file://jobs/data/x.csv"},
		{in: "/abs/x.csv", werr: "no scheme"},
		{in: "http://host/x.csv", werr: `unsupported scheme "http"`},
		{in: "gs://bucket/key", werr: `unsupported scheme "gs"`},
		{in: "file://", werr: "no file path"},
		{in: "file:///", werr: "no file path"},
		{in: "s3://", werr: "no bucket"},
		{in: "s3:///key", werr: "no bucket"},
		{in: "s3://bucket", werr: "no object key"},
		{in: "s3://bucket/", werr: "no object key"},
		{in: "s3://ab/key", werr: "3 to 63"},
		{in: "s3://Bucket/key", werr: "lowercase"},
		{in: "s3://-bucket/key", werr: "start and end"},
		{in: "s3://bucket/key?versionId=1", werr: "query strings"},
		{in: "file://x.csv#frag", werr: "query strings"},
		{in: " file://x.csv", werr: "spaces"},
		{in: "file://x\x00.csv", werr: "control character"},
		{in: "s3://bucket/" + strings.Repeat("k", 1025), werr: "limit is 1024"},
		{in: "file://" + strings.Repeat("p", 2100), werr: "limit is 2048"},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			scheme, bucket, path, err := ParseURI(tt.in)
			if tt.werr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.werr) {
					t.Fatalf("ParseURI(%q) = %q, %q, %q, %v; want an error containing %q", tt.in, scheme, bucket, path, err, tt.werr)
				}
				if scheme != "" || bucket != "" || path != "" {
					t.Fatalf("ParseURI(%q) returned parts with an error", tt.in)
				}
				return
			}
			if err != nil || scheme != tt.scheme || bucket != tt.bucket || path != tt.path {
				t.Fatalf("ParseURI(%q) = %q, %q, %q, %v; want %q, %q, %q", tt.in, scheme, bucket, path, err, tt.scheme, tt.bucket, tt.path)
			}
		})
	}
}
