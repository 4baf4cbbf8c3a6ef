package s3test

import (
	"strings"
	"testing"
)

func TestFindBinaryMissing(t *testing.T) {
	t.Setenv("VERSITYGW", "/nonexistent/versitygw")
	_, err := findBinary()
	if err == nil || !strings.Contains(err.Error(), "versitygw not found: run `make deps` (scripts/install-versitygw.sh)") {
		t.Fatalf("findBinary with a bad $VERSITYGW = %v, want the make deps hint", err)
	}
}

func TestBucketName(t *testing.T) {
	for _, name := range []string{"TestX", "TestVery/Long_Name/" + strings.Repeat("x", 100), "Test--a__b"} {
		b := bucketName(name)
		if len(b) < 3 || len(b) > 63 || strings.Contains(b, "--") || strings.Trim(b, "-") != b || strings.ToLower(b) != b {
			t.Errorf("bucketName(%q) = %q: not a valid bucket name", name, b)
		}
	}
}

func TestStartStop(t *testing.T) {
	s := Start(t)
	if s.Bucket == "" || !strings.HasPrefix(s.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("Start = %+v", s)
	}
	if s.NewBucket(t) == s.Bucket {
		t.Fatal("NewBucket returned the same name")
	}
}
