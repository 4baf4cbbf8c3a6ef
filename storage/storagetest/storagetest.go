// Package storagetest holds the conformance suite every storage.Blob backend must pass.
// A backend's test calls RunBlobSuite with a constructor that returns an empty store
// (a fresh directory, or a fresh bucket or key prefix).
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/cohort-dev/cohort/storage"
)

// LargeObjectSize is the size of the object the suite uses to check streaming of large
// payloads (20 MiB).
const LargeObjectSize = 20 << 20

// RunBlobSuite runs the full Blob contract against the stores newBlob returns. newBlob
// is called once per subtest and must return an empty store; it may register cleanup
// with t.Cleanup.
func RunBlobSuite(t *testing.T, newBlob func(t *testing.T) storage.Blob) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, b storage.Blob)
	}{
		{"PutGetRoundTrip", testPutGetRoundTrip},
		{"PutUnknownSize", testPutUnknownSize},
		{"Overwrite", testOverwrite},
		{"PutIfAbsent", testPutIfAbsent},
		{"PutIfAbsentConcurrentOneWinner", testPutIfAbsentConcurrent},
		{"ConcurrentPutsSameKey", testConcurrentPuts},
		{"ConcurrentPutsDistinctKeys", testConcurrentDistinctKeys},
		{"Stat", testStat},
		{"NotFound", testNotFound},
		{"List", testList},
		{"Delete", testDelete},
		{"LargeObject", testLargeObject},
		{"CancelledContext", testCancelledContext},
		{"URI", testURI},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newBlob(t))
		})
	}
}

func put(t *testing.T, b storage.Blob, key string, data []byte) {
	t.Helper()
	if err := b.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func get(t *testing.T, b storage.Blob, key string) []byte {
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
	return data
}

func testPutGetRoundTrip(t *testing.T, b storage.Blob) {
	cases := []struct {
		name string
		key  string
		data []byte
	}{
		{"flat", "object", []byte("hello")},
		{"nested", "jobs/j1/checkpoints/000000000001/shard-0.bin", []byte{0, 1, 2, 3, 255}},
		{"empty", "empty", []byte{}},
		{"spaces and unicode", "data/äpfel und birnen.csv", []byte("a,b\n1,2\n")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			put(t, b, tc.key, tc.data)
			if got := get(t, b, tc.key); !bytes.Equal(got, tc.data) {
				t.Fatalf("Get(%q) = %q, want %q", tc.key, got, tc.data)
			}
		})
	}
}

func testPutUnknownSize(t *testing.T, b storage.Blob) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	// A reader without a Len method, so the backend cannot learn the size.
	r := io.MultiReader(bytes.NewReader(data[:10]), bytes.NewReader(data[10:]))
	if err := b.Put(context.Background(), "unknown-size", r, -1); err != nil {
		t.Fatalf("Put(size -1): %v", err)
	}
	if got := get(t, b, "unknown-size"); !bytes.Equal(got, data) {
		t.Fatalf("Get after Put(size -1): %d bytes, want %d", len(got), len(data))
	}
}

func testOverwrite(t *testing.T, b storage.Blob) {
	put(t, b, "k", []byte("first version, longer"))
	put(t, b, "k", []byte("second"))
	if got := get(t, b, "k"); string(got) != "second" {
		t.Fatalf("after overwrite Get = %q, want %q", got, "second")
	}
	info, err := b.Stat(context.Background(), "k")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Size != int64(len("second")) {
		t.Fatalf("after overwrite Stat.Size = %d, want %d", info.Size, len("second"))
	}
}

func testPutIfAbsent(t *testing.T, b storage.Blob) {
	ctx := context.Background()
	if err := b.PutIfAbsent(ctx, "once/manifest.json", strings.NewReader("original"), 8); err != nil {
		t.Fatalf("first PutIfAbsent: %v", err)
	}
	err := b.PutIfAbsent(ctx, "once/manifest.json", strings.NewReader("intruder!"), 9)
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second PutIfAbsent error = %v, want ErrExists", err)
	}
	if err != nil && !strings.Contains(err.Error(), "once/manifest.json") {
		t.Errorf("ErrExists error %q does not name the key", err)
	}
	if got := get(t, b, "once/manifest.json"); string(got) != "original" {
		t.Fatalf("object changed by failed PutIfAbsent: %q", got)
	}
	objs, err := b.List(ctx, "once/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(objs) != 1 {
		t.Fatalf("List after failed PutIfAbsent = %v, want exactly the one object", objs)
	}
}

func testPutIfAbsentConcurrent(t *testing.T, b storage.Blob) {
	const writers = 16
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			body := fmt.Sprintf("writer-%02d", i)
			errs[i] = b.PutIfAbsent(ctx, "race/manifest.json", strings.NewReader(body), int64(len(body)))
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won PutIfAbsent", winner, i)
			}
			winner = i
		case errors.Is(err, storage.ErrExists):
		default:
			t.Fatalf("writer %d: unexpected error %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won PutIfAbsent")
	}
	if got, want := string(get(t, b, "race/manifest.json")), fmt.Sprintf("writer-%02d", winner); got != want {
		t.Fatalf("stored %q, but the winner wrote %q", got, want)
	}
}

func testConcurrentPuts(t *testing.T, b storage.Blob) {
	const writers = 8
	const size = 256 << 10
	ctx := context.Background()
	bodies := make([][]byte, writers)
	for i := range bodies {
		bodies[i] = bytes.Repeat([]byte{byte('a' + i)}, size)
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Put(ctx, "contended", bytes.NewReader(bodies[i]), size)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	got := get(t, b, "contended")
	for _, body := range bodies {
		if bytes.Equal(got, body) {
			return
		}
	}
	t.Fatalf("object after concurrent Puts (%d bytes) is none of the written bodies: torn write", len(got))
}

func testConcurrentDistinctKeys(t *testing.T, b storage.Blob) {
	const writers = 16
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("many/%02d/obj", i)
			body := []byte(key)
			errs[i] = b.Put(ctx, key, bytes.NewReader(body), int64(len(body)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	objs, err := b.List(ctx, "many/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(objs) != writers {
		t.Fatalf("List found %d objects, want %d", len(objs), writers)
	}
	for i, o := range objs {
		want := fmt.Sprintf("many/%02d/obj", i)
		if o.Key != want {
			t.Fatalf("List[%d].Key = %q, want %q", i, o.Key, want)
		}
		if got := get(t, b, want); string(got) != want {
			t.Fatalf("Get(%q) = %q", want, got)
		}
	}
}

func testStat(t *testing.T, b storage.Blob) {
	sizes := []struct {
		key  string
		size int
	}{
		{"stat/empty", 0},
		{"stat/one", 1},
		{"stat/kib", 1024},
		{"stat/odd", 70001},
	}
	for _, tc := range sizes {
		t.Run(tc.key, func(t *testing.T) {
			put(t, b, tc.key, make([]byte, tc.size))
			info, err := b.Stat(context.Background(), tc.key)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if info.Key != tc.key || info.Size != int64(tc.size) {
				t.Fatalf("Stat = {Key:%q Size:%d}, want {Key:%q Size:%d}", info.Key, info.Size, tc.key, tc.size)
			}
			if info.ModTime.IsZero() {
				t.Fatal("Stat.ModTime is zero")
			}
		})
	}
}

func testNotFound(t *testing.T, b storage.Blob) {
	ctx := context.Background()
	put(t, b, "present/child", []byte("x"))
	for _, key := range []string{"absent", "present/absent", "present", "absent/deeper/still"} {
		t.Run(key, func(t *testing.T) {
			rc, err := b.Get(ctx, key)
			if err == nil {
				rc.Close()
				t.Fatalf("Get(%q) succeeded, want ErrNotFound", key)
			}
			if !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Get(%q) error = %v, want ErrNotFound", key, err)
			}
			if !strings.Contains(err.Error(), key) {
				t.Errorf("Get error %q does not name the key %q", err, key)
			}
			if _, err := b.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Stat(%q) error = %v, want ErrNotFound", key, err)
			}
		})
	}
}

func testList(t *testing.T, b storage.Blob) {
	ctx := context.Background()
	keys := []string{"b", "a/c/d", "ab", "a/b", "a-z", "c/x/y/z"}
	for _, k := range keys {
		put(t, b, k, []byte(k+"-data"))
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-z", "a/b", "a/c/d", "ab", "b", "c/x/y/z"}},
		{"a", []string{"a-z", "a/b", "a/c/d", "ab"}},
		{"a/", []string{"a/b", "a/c/d"}},
		{"a/c", []string{"a/c/d"}},
		{"a/c/", []string{"a/c/d"}},
		{"a/c/d", []string{"a/c/d"}},
		{"ab", []string{"ab"}},
		{"c/x/y/", []string{"c/x/y/z"}},
		{"zz", nil},
		{"nothing/here/", nil},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("prefix=%q", tc.prefix), func(t *testing.T) {
			objs, err := b.List(ctx, tc.prefix)
			if err != nil {
				t.Fatalf("List(%q): %v", tc.prefix, err)
			}
			got := make([]string, 0, len(objs))
			for _, o := range objs {
				got = append(got, o.Key)
				if o.Size != int64(len(o.Key+"-data")) {
					t.Errorf("List(%q): %q has Size %d, want %d", tc.prefix, o.Key, o.Size, len(o.Key+"-data"))
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("List(%q) = %v, want %v", tc.prefix, got, tc.want)
			}
		})
	}
}

func testDelete(t *testing.T, b storage.Blob) {
	ctx := context.Background()
	put(t, b, "del/a/b", []byte("1"))
	put(t, b, "del/keep", []byte("2"))
	if err := b.Delete(ctx, "del/a/b"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := b.Stat(ctx, "del/a/b"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx, "del/a/b"); err != nil {
		t.Fatalf("second Delete of the same key: %v, want nil", err)
	}
	if err := b.Delete(ctx, "never/existed"); err != nil {
		t.Fatalf("Delete of an absent key: %v, want nil", err)
	}
	objs, err := b.List(ctx, "del/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(objs) != 1 || objs[0].Key != "del/keep" {
		t.Fatalf("List after Delete = %v, want only del/keep", objs)
	}
	// The key is free again, also for a create-only write.
	if err := b.PutIfAbsent(ctx, "del/a/b", strings.NewReader("3"), 1); err != nil {
		t.Fatalf("PutIfAbsent after Delete: %v", err)
	}
}

func testLargeObject(t *testing.T, b storage.Blob) {
	data := make([]byte, LargeObjectSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(data); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	want := sha256.Sum256(data)
	put(t, b, "large/blob.bin", data)
	info, err := b.Stat(context.Background(), "large/blob.bin")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Size != LargeObjectSize {
		t.Fatalf("Stat.Size = %d, want %d", info.Size, LargeObjectSize)
	}
	rc, err := b.Get(context.Background(), "large/blob.bin")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("large object read back with a different sha256")
	}
}

func testCancelledContext(t *testing.T, b storage.Blob) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Put(ctx, "cancelled", strings.NewReader("x"), 1); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	if err := b.PutIfAbsent(ctx, "cancelled", strings.NewReader("x"), 1); err == nil {
		t.Fatal("PutIfAbsent with a cancelled context succeeded")
	}
	if _, err := b.Stat(context.Background(), "cancelled"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("object exists after cancelled Puts: Stat error = %v", err)
	}
}

func testURI(t *testing.T, b storage.Blob) {
	u := b.URI("jobs/x/model.safetensors")
	if !strings.HasPrefix(u, "file:///") && !strings.HasPrefix(u, "s3://") {
		t.Fatalf("URI = %q, want file:///... or s3://...", u)
	}
	if !strings.HasSuffix(u, "/jobs/x/model.safetensors") {
		t.Fatalf("URI = %q does not end with the key", u)
	}
}
