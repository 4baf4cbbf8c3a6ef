package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
	"github.com/cohort-dev/cohort/storage/storagetest"
)

// newS3 connects to cfg and fails the test on error.
func newS3(t testing.TB, cfg storage.S3Config) *storage.S3 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := storage.NewS3(ctx, cfg)
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return s
}

func TestS3Conformance(t *testing.T) {
	srv := s3test.Start(t)
	storagetest.RunBlobSuite(t, func(t *testing.T) storage.Blob {
		cfg := srv.Config()
		cfg.Bucket = srv.NewBucket(t)
		return newS3(t, cfg)
	})
}

// TestS3ConformanceWithPrefix runs the suite on stores that share one bucket and
// differ by key prefix, so every operation must stay inside its prefix.
func TestS3ConformanceWithPrefix(t *testing.T) {
	srv := s3test.Start(t)
	// A neighbour's object right next to every prefix must never show up.
	neighbour := srv.Config()
	neighbour.Prefix = "other"
	if err := newS3(t, neighbour).Put(context.Background(), "a/b", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	n := 0
	storagetest.RunBlobSuite(t, func(t *testing.T) storage.Blob {
		n++
		cfg := srv.Config()
		cfg.Prefix = fmt.Sprintf("cluster-%d", n) // the trailing '/' is added
		s := newS3(t, cfg)
		if s.Prefix() != cfg.Prefix+"/" {
			t.Fatalf("Prefix() = %q, want %q", s.Prefix(), cfg.Prefix+"/")
		}
		return s
	})
}

func TestS3URI(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config()
	cfg.Prefix = "team/a/"
	s := newS3(t, cfg)
	if got, want := s.URI("jobs/x/model.onnx"), "s3://"+srv.Bucket+"/team/a/jobs/x/model.onnx"; got != want {
		t.Fatalf("URI = %q, want %q", got, want)
	}
}

// TestS3PutIfAbsentRaceManyClients races writers that each have their own client
// (as separate processes would) for several keys: exactly one wins each key.
func TestS3PutIfAbsentRaceManyClients(t *testing.T) {
	srv := s3test.Start(t)
	const writers = 12
	clients := make([]*storage.S3, writers)
	for i := range clients {
		clients[i] = newS3(t, srv.Config())
	}
	ctx := context.Background()
	for round := range 5 {
		key := fmt.Sprintf("jobs/race/checkpoints/%012d/manifest.json", round)
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				body := fmt.Sprintf("round %d writer %02d", round, i)
				errs[i] = c.PutIfAbsent(ctx, key, strings.NewReader(body), int64(len(body)))
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: writers %d and %d both won", round, winner, i)
				}
				winner = i
			case errors.Is(err, storage.ErrExists):
				if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), srv.Bucket) {
					t.Errorf("ErrExists error %q does not name key and bucket", err)
				}
			default:
				t.Fatalf("round %d writer %d: %v", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no winner", round)
		}
		got := readAll(t, clients[0], key)
		if want := fmt.Sprintf("round %d writer %02d", round, winner); got != want {
			t.Fatalf("round %d: stored %q, winner wrote %q", round, got, want)
		}
	}
}

// TestS3PutIfAbsentLargeIsOneRequest checks an object above the multipart threshold:
// PutIfAbsent must still send one conditional PUT, so a second one cannot overwrite.
func TestS3PutIfAbsentLargeIsOneRequest(t *testing.T) {
	srv := s3test.Start(t)
	proxy := srv.StartFaultProxy(t)
	s := newS3(t, proxy.Config())
	ctx := context.Background()
	const size = storage.DefaultS3PartSize + 1<<20
	first := bytes.Repeat([]byte{1}, size)
	// An unmatched rule: it only counts multipart part uploads.
	parts := 0
	proxy.Inject(func(r *http.Request) bool {
		if s3test.IsPartUpload(r) {
			parts++
		}
		return false
	}, -1, s3test.Fault{})
	if err := s.PutIfAbsent(ctx, "big/manifest", bytes.NewReader(first), size); err != nil {
		t.Fatalf("PutIfAbsent(%d bytes): %v", size, err)
	}
	if parts != 0 {
		t.Fatalf("PutIfAbsent sent %d multipart part uploads, want a single PUT", parts)
	}
	// The losers go straight to the server: versitygw answers 412 before it has read
	// a large body and resets the connection, which the proxy (unlike a client) turns
	// into 502 Bad Gateway.
	direct := newS3(t, srv.Config())
	second := bytes.Repeat([]byte{2}, size)
	err := direct.PutIfAbsent(ctx, "big/manifest", bytes.NewReader(second), size)
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second PutIfAbsent = %v, want ErrExists", err)
	}
	// Also a reader that cannot be re-read, with unknown size: buffered, one request.
	err = direct.PutIfAbsent(ctx, "big/manifest", io.MultiReader(bytes.NewReader(second)), -1)
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("PutIfAbsent(size -1) = %v, want ErrExists", err)
	}
	if parts != 0 {
		t.Fatalf("PutIfAbsent sent %d multipart part uploads, want a single PUT", parts)
	}
	rc, err := s.Get(ctx, "big/manifest")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, first) {
		t.Fatal("a failed PutIfAbsent changed the object")
	}
	// Put of the same size does go multipart (that is allowed for Put).
	if err := s.Put(ctx, "big/data", bytes.NewReader(second), size); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if parts == 0 {
		t.Fatal("Put above the part size did not use a multipart upload; the check above proves nothing")
	}
}

func TestS3PutIfAbsentLimits(t *testing.T) {
	srv := s3test.Start(t)
	s := newS3(t, srv.Config())
	ctx := context.Background()
	err := s.PutIfAbsent(ctx, "huge", strings.NewReader(""), storage.MaxS3ConditionalPutSize+1)
	if err == nil || !strings.Contains(err.Error(), "conditional PUT") || !strings.Contains(err.Error(), `"huge"`) {
		t.Fatalf("PutIfAbsent above 5 GiB = %v, want a size error naming the key", err)
	}
	err = s.PutIfAbsent(ctx, "short", io.MultiReader(strings.NewReader("abc")), 10)
	if err == nil || !strings.Contains(err.Error(), "size mismatch") {
		t.Fatalf("PutIfAbsent with a short reader = %v, want a size mismatch", err)
	}
	if _, err := s.Stat(ctx, "short"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("failed PutIfAbsent left an object: Stat = %v", err)
	}
	if err := s.PutIfAbsent(ctx, "unknown", io.MultiReader(strings.NewReader("abc")), -1); err != nil {
		t.Fatalf("PutIfAbsent(size -1): %v", err)
	}
	if got := readAll(t, s, "unknown"); got != "abc" {
		t.Fatalf("Get = %q", got)
	}
}

func TestS3Manifest(t *testing.T) {
	srv := s3test.Start(t)
	s := newS3(t, srv.Config())
	ctx := context.Background()
	m := storeCheckpoint(t, s, "job-s3", 400, []uint64{10, 7, 3})
	key, err := storage.WriteManifest(ctx, s, m)
	if err != nil {
		t.Fatalf("WriteManifest: %v", err)
	}
	if key != storage.ManifestKey("job-s3", 400) {
		t.Fatalf("WriteManifest key = %q", key)
	}
	got, err := storage.ReadManifest(ctx, s, key)
	if err != nil {
		t.Fatalf("ReadManifest: %v", err)
	}
	if got.Step != 400 || got.TotalParams != 20 || len(got.Objects) != 3 {
		t.Fatalf("ReadManifest = %+v", got)
	}
	if err := storage.VerifyManifestObjects(ctx, s, got); err != nil {
		t.Fatalf("VerifyManifestObjects: %v", err)
	}
	// The commit point is create-only.
	m2 := *m
	m2.Generation++
	if _, err := storage.WriteManifest(ctx, s, &m2); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second WriteManifest = %v, want ErrExists", err)
	}
	// A damaged object is found.
	bad := m.Objects[1]
	if err := s.Put(ctx, bad.Key, bytes.NewReader(make([]byte, bad.Size)), bad.Size); err != nil {
		t.Fatal(err)
	}
	if err := storage.VerifyManifestObjects(ctx, s, got); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("VerifyManifestObjects after corruption = %v, want a sha256 mismatch", err)
	}
	if err := s.Delete(ctx, bad.Key); err != nil {
		t.Fatal(err)
	}
	if err := storage.VerifyManifestObjects(ctx, s, got); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("VerifyManifestObjects after delete = %v, want ErrNotFound", err)
	}
	if _, err := storage.ReadManifest(ctx, s, storage.ManifestKey("job-s3", 401)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("ReadManifest of a missing manifest = %v, want ErrNotFound", err)
	}
}

func TestOpenURI(t *testing.T) {
	srv := s3test.Start(t)
	s := newS3(t, srv.Config())
	ctx := context.Background()
	if err := s.Put(ctx, "data/train.csv", strings.NewReader("a,b\n1,2\n"), 8); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "local.csv")
	if err := os.WriteFile(file, []byte("local"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := srv.Config()
	cfg.Bucket = "ignored-bucket" // the URI names the bucket
	cfg.Prefix = "ignored/"

	for _, tc := range []struct{ uri, want string }{
		{"s3://" + srv.Bucket + "/data/train.csv", "a,b\n1,2\n"},
		{s.URI("data/train.csv"), "a,b\n1,2\n"},
		{"file://" + filepath.ToSlash(file), "local"},
	} {
		rc, err := storage.OpenURI(ctx, tc.uri, cfg)
		if err != nil {
			t.Fatalf("OpenURI(%q): %v", tc.uri, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(got) != tc.want {
			t.Fatalf("OpenURI(%q) read %q, %v; want %q", tc.uri, got, err, tc.want)
		}
	}

	for _, uri := range []string{
		"s3://" + srv.Bucket + "/data/missing.csv",
		"s3://no-such-bucket-cohort/data/train.csv",
		"file://" + filepath.ToSlash(file) + ".missing",
	} {
		t.Run("missing "+uri, func(t *testing.T) {
			_, err := storage.OpenURI(ctx, uri, cfg)
			if !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("OpenURI(%q) = %v, want ErrNotFound", uri, err)
			}
			if !strings.Contains(err.Error(), uri) {
				t.Fatalf("error %q does not name the URI", err)
			}
		})
	}

	for _, tc := range []struct{ uri, want string }{
		{"http://example.com/x", "unsupported URI"},
		{"s3://", "want s3://bucket/key"},
		{"s3://bucket-only", "want s3://bucket/key"},
		{"s3://bucket/", "want s3://bucket/key"},
		{"s3://Bad_Bucket/key", "Bucket"},
		{"s3://bucket/a/../b", "escapes"},
	} {
		t.Run("invalid "+tc.uri, func(t *testing.T) {
			_, err := storage.OpenURI(ctx, tc.uri, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenURI(%q) = %v, want an error containing %q", tc.uri, err, tc.want)
			}
		})
	}
}

func TestNewS3Config(t *testing.T) {
	srv := s3test.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "")
	tests := []struct {
		name    string
		edit    func(c *storage.S3Config)
		wantErr string // empty: NewS3 succeeds
	}{
		{"valid", func(c *storage.S3Config) {}, ""},
		{"empty endpoint", func(c *storage.S3Config) { c.Endpoint = "" }, "Endpoint: empty"},
		{"bad scheme", func(c *storage.S3Config) { c.Endpoint = "ftp://127.0.0.1:1" }, `scheme "ftp"`},
		{"endpoint with path", func(c *storage.S3Config) { c.Endpoint += "/bucket" }, "without path"},
		{"endpoint without host", func(c *storage.S3Config) { c.Endpoint = "http://" }, "empty host"},
		{"empty bucket", func(c *storage.S3Config) { c.Bucket = "" }, "Bucket: empty"},
		{"invalid bucket", func(c *storage.S3Config) { c.Bucket = "Not_Valid" }, `Bucket "Not_Valid"`},
		{"access key without secret", func(c *storage.S3Config) { c.SecretKey = "" }, "SecretKey: empty"},
		{"secret without access key", func(c *storage.S3Config) { c.AccessKey = "" }, "AccessKey: empty"},
		{"no credentials anywhere", func(c *storage.S3Config) { c.AccessKey, c.SecretKey = "", "" }, "AWS_ACCESS_KEY_ID"},
		{"wrong secret", func(c *storage.S3Config) { c.SecretKey = "wrong" }, "check AccessKey, SecretKey"},
		{"negative retries", func(c *storage.S3Config) { c.Retries = -1 }, "Retries -1"},
		{"small part size", func(c *storage.S3Config) { c.PartSize = 1 << 20 }, "PartSize 1048576"},
		{"bad prefix", func(c *storage.S3Config) { c.Prefix = "a//b" }, "Prefix"},
		{"absolute prefix", func(c *storage.S3Config) { c.Prefix = "/abs" }, "Prefix"},
		{"missing bucket", func(c *storage.S3Config) { c.Bucket = "cohort-missing-bucket" }, "does not exist"},
		{"create missing bucket", func(c *storage.S3Config) { c.Bucket = "cohort-created-bucket"; c.CreateBucket = true }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := srv.Config()
			tc.edit(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := storage.NewS3(ctx, cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewS3: %v", err)
				}
				if err := s.Put(ctx, "probe", strings.NewReader("x"), 1); err != nil {
					t.Fatalf("Put: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewS3 error = %v, want containing %q", err, tc.wantErr)
			}
		})
	}

	t.Run("credentials and region from the environment", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
		t.Setenv("AWS_REGION", s3test.Region)
		cfg := srv.Config()
		cfg.AccessKey, cfg.SecretKey, cfg.Region = "", "", ""
		s := newS3(t, cfg)
		if err := s.Put(context.Background(), "env", strings.NewReader("x"), 1); err != nil {
			t.Fatalf("Put with credentials from the environment: %v", err)
		}
	})
}

func TestS3AbortStaleUploads(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config()
	cfg.Prefix = "mine"
	s := newS3(t, cfg)
	ctx := context.Background()
	core := minio.Core{Client: srv.Client(t)}
	for _, name := range []string{"mine/jobs/j/ckpt/shard-0.bin", "mine/jobs/j/ckpt/shard-1.bin", "theirs/x.bin"} {
		id, err := core.NewMultipartUpload(ctx, srv.Bucket, name, minio.PutObjectOptions{})
		if err != nil {
			t.Fatalf("NewMultipartUpload(%q): %v", name, err)
		}
		part := bytes.Repeat([]byte("p"), 1024)
		if _, err := core.PutObjectPart(ctx, srv.Bucket, name, id, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{}); err != nil {
			t.Fatalf("PutObjectPart: %v", err)
		}
	}

	n, err := s.AbortStaleUploads(ctx, time.Hour)
	if err != nil || n != 0 {
		t.Fatalf("AbortStaleUploads(1h) = %d, %v; want 0 fresh uploads aborted", n, err)
	}
	n, err = s.AbortStaleUploads(ctx, 0)
	if err != nil || n != 2 {
		t.Fatalf("AbortStaleUploads(0) = %d, %v; want the 2 uploads under the prefix", n, err)
	}
	var left []string
	for up := range srv.Client(t).ListIncompleteUploads(ctx, srv.Bucket, "", true) {
		if up.Err != nil {
			t.Fatal(up.Err)
		}
		left = append(left, up.Key)
	}
	if len(left) != 1 || left[0] != "theirs/x.bin" {
		t.Fatalf("uploads left = %v, want only the one outside the prefix", left)
	}
	if _, err := s.AbortStaleUploads(ctx, -time.Second); err == nil {
		t.Fatal("AbortStaleUploads with a negative age succeeded")
	}
}

// TestS3RetriesTransientFaults: throttling and server errors on the first requests
// are retried (minio-go's bounded retries, PutIfAbsent's own loop) and succeed.
func TestS3RetriesTransientFaults(t *testing.T) {
	srv := s3test.Start(t)
	proxy := srv.StartFaultProxy(t)
	s := newS3(t, proxy.Config()) // 2 retries
	ctx := context.Background()

	proxy.Inject(nil, 2, s3test.SlowDown)
	if err := s.Put(ctx, "retry/put", bytes.NewReader([]byte("put")), 3); err != nil {
		t.Fatalf("Put after 2 SlowDowns: %v", err)
	}
	proxy.Inject(nil, 2, s3test.InternalError)
	if err := s.PutIfAbsent(ctx, "retry/manifest", bytes.NewReader([]byte("once")), 4); err != nil {
		t.Fatalf("PutIfAbsent after 2 InternalErrors: %v", err)
	}
	proxy.Inject(nil, 2, s3test.SlowDown)
	if got := readAll(t, s, "retry/put"); got != "put" {
		t.Fatalf("Get after 2 SlowDowns = %q", got)
	}
	proxy.Inject(nil, 2, s3test.SlowDown)
	if objs, err := s.List(ctx, "retry/"); err != nil || len(objs) != 2 {
		t.Fatalf("List after 2 SlowDowns = %v, %v", objs, err)
	}
	if _, faults := proxy.Counts(); faults != 8 {
		t.Fatalf("proxy injected %d faults, want 8", faults)
	}
}

// TestS3PutIfAbsentLostAnswer: the server commits the object but the answer is lost;
// the retry meets 412 and PutIfAbsent recognises its own bytes. A different object
// behind a lost answer is still ErrExists.
func TestS3PutIfAbsentLostAnswer(t *testing.T) {
	srv := s3test.Start(t)
	proxy := srv.StartFaultProxy(t)
	s := newS3(t, proxy.Config())
	ctx := context.Background()

	lost := s3test.InternalError
	lost.AfterForward = true
	proxy.Inject(s3test.IsObjectPut, 1, lost)
	if err := s.PutIfAbsent(ctx, "lost/manifest", strings.NewReader("mine"), 4); err != nil {
		t.Fatalf("PutIfAbsent whose first answer was lost: %v", err)
	}
	if got := readAll(t, s, "lost/manifest"); got != "mine" {
		t.Fatalf("stored %q", got)
	}

	proxy.Inject(s3test.IsObjectPut, 1, s3test.InternalError)
	err := s.PutIfAbsent(ctx, "lost/manifest", strings.NewReader("someone else"), 12)
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("PutIfAbsent of other bytes after a fault = %v, want ErrExists", err)
	}
}

// TestS3PersistentFaultFails: when faults outlast the retries the call fails with
// the cause, and no object and no multipart upload is left behind.
func TestS3PersistentFaultFails(t *testing.T) {
	srv := s3test.Start(t)
	proxy := srv.StartFaultProxy(t)
	s := newS3(t, proxy.Config())
	direct := newS3(t, srv.Config())
	ctx := context.Background()

	proxy.Inject(s3test.IsObjectPut, -1, s3test.SlowDown)
	err := s.Put(ctx, "fault/small", strings.NewReader("x"), 1)
	if err == nil || !strings.Contains(err.Error(), "SlowDown") && !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Put under persistent SlowDown = %v, want the server's error", err)
	}
	err = s.PutIfAbsent(ctx, "fault/manifest", strings.NewReader("x"), 1)
	if err == nil || errors.Is(err, storage.ErrExists) || !strings.Contains(err.Error(), "giving up after 3 attempts") {
		t.Fatalf("PutIfAbsent under persistent SlowDown = %v, want giving up after 3 attempts", err)
	}
	proxy.Clear()

	// A multipart Put whose parts keep failing is aborted.
	proxy.Inject(s3test.IsPartUpload, -1, s3test.InternalError)
	big := bytes.Repeat([]byte("b"), storage.DefaultS3PartSize+1)
	if err := s.Put(ctx, "fault/big", bytes.NewReader(big), int64(len(big))); err == nil {
		t.Fatal("multipart Put with failing parts succeeded")
	}
	proxy.Clear()

	for _, key := range []string{"fault/small", "fault/manifest", "fault/big"} {
		if _, err := direct.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s after a failed write: Stat = %v, want ErrNotFound", key, err)
		}
	}
	for up := range srv.Client(t).ListIncompleteUploads(ctx, srv.Bucket, "", true) {
		t.Errorf("multipart upload left behind: %+v", up)
	}
}

func readAll(t testing.TB, b storage.Blob, key string) string {
	t.Helper()
	rc, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", key, err)
	}
	return string(data)
}
