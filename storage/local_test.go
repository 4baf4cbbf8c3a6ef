package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/storagetest"
)

func newLocal(t *testing.T) *storage.Local {
	t.Helper()
	l, err := storage.NewLocal(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	return l
}

func TestLocalConformance(t *testing.T) {
	storagetest.RunBlobSuite(t, func(t *testing.T) storage.Blob { return newLocal(t) })
}

func TestNewLocal(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dir     string
		wantErr string
	}{
		{"creates nested", filepath.Join(dir, "x", "y", "z"), ""},
		{"existing", dir, ""},
		{"empty path", "", "empty path"},
		{"is a file", file, "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := storage.NewLocal(tc.dir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NewLocal(%q) error = %v, want containing %q", tc.dir, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewLocal(%q): %v", tc.dir, err)
			}
			if fi, err := os.Stat(l.Root()); err != nil || !fi.IsDir() {
				t.Fatalf("root %q not a directory: %v", l.Root(), err)
			}
		})
	}
}

func TestLocalRejectsEscapingKeys(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	tests := []struct {
		key     string
		wantErr string
	}{
		{"", "empty"},
		{"../x", `segment ".."`},
		{"a/../../x", `segment ".."`},
		{"a/..", `segment ".."`},
		{"./a", `segment "."`},
		{"/etc/passwd", "absolute"},
		{`a\..\..\x`, "backslash"},
		{"a\x00b", "NUL"},
		{"a//b", "empty path segment"},
		{"a/", "empty path segment"},
		{"a/.tmp-x", "reserved prefix"},
		{strings.Repeat("k", 1025), "longer than 1024"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			checks := map[string]error{
				"Put":         l.Put(ctx, tc.key, strings.NewReader("x"), 1),
				"PutIfAbsent": l.PutIfAbsent(ctx, tc.key, strings.NewReader("x"), 1),
				"Delete":      l.Delete(ctx, tc.key),
			}
			_, checks["Stat"] = l.Stat(ctx, tc.key)
			_, checks["Get"] = l.Get(ctx, tc.key)
			for op, err := range checks {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("%s(%q) error = %v, want containing %q", op, tc.key, err, tc.wantErr)
				}
				if errors.Is(err, storage.ErrNotFound) {
					t.Errorf("%s(%q): an invalid key must not look like a missing one: %v", op, tc.key, err)
				}
			}
		})
	}
	// Nothing escaped the root.
	if _, err := os.Stat(filepath.Join(filepath.Dir(l.Root()), "x")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file appeared outside the root: %v", err)
	}
}

func TestLocalListPrefixValidation(t *testing.T) {
	l := newLocal(t)
	for _, prefix := range []string{"../", "a/../..", "/abs", `a\b`, "x\x00"} {
		t.Run(prefix, func(t *testing.T) {
			if _, err := l.List(context.Background(), prefix); err == nil {
				t.Fatalf("List(%q) succeeded, want an error", prefix)
			}
		})
	}
}

func TestLocalListIgnoresTempFiles(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	if err := l.Put(ctx, "d/obj", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	// An in-flight (or crashed) write leaves a temporary file behind.
	if err := os.WriteFile(filepath.Join(l.Root(), "d", ".tmp-obj-123"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := l.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "d/obj" {
		t.Fatalf("List = %v, want only d/obj", objs)
	}
}

func TestLocalPutFailureLeavesNothing(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	failing := io.MultiReader(strings.NewReader("partial"), errReader{errors.New("disk on fire")})
	tests := []struct {
		name    string
		r       io.Reader
		size    int64
		wantErr string
	}{
		{"reader error", failing, -1, "disk on fire"},
		{"short body", strings.NewReader("abc"), 10, "size mismatch: declared 10 bytes, read 3"},
		{"long body", strings.NewReader("abcdef"), 2, "size mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Put(ctx, "dir/obj", tc.r, tc.size)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "dir/obj") {
				t.Fatalf("Put error = %v, want one naming the key and containing %q", err, tc.wantErr)
			}
			entries, _ := os.ReadDir(filepath.Join(l.Root(), "dir"))
			if len(entries) != 0 {
				t.Fatalf("files left after a failed Put: %v", entries)
			}
		})
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestLocalDeletePrunesEmptyDirectories(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	for _, k := range []string{"jobs/j/checkpoints/1/a", "jobs/j/checkpoints/2/b", "top"} {
		if err := l.Put(ctx, k, strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		del        string
		wantGone   []string
		wantRemain []string
	}{
		{"jobs/j/checkpoints/1/a", []string{"jobs/j/checkpoints/1"}, []string{"jobs/j/checkpoints/2"}},
		{"jobs/j/checkpoints/2/b", []string{"jobs"}, []string{"top"}},
		{"top", nil, []string{"."}},
	}
	for _, st := range steps {
		t.Run(st.del, func(t *testing.T) {
			if err := l.Delete(ctx, st.del); err != nil {
				t.Fatal(err)
			}
			for _, p := range st.wantGone {
				if _, err := os.Stat(filepath.Join(l.Root(), p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still exists (err %v)", p, err)
				}
			}
			for _, p := range st.wantRemain {
				if _, err := os.Stat(filepath.Join(l.Root(), p)); err != nil {
					t.Errorf("%s was removed: %v", p, err)
				}
			}
		})
	}
}

func TestLocalFileDirectoryConflict(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	if err := l.Put(ctx, "a/b", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if err := l.PutIfAbsent(ctx, "a", strings.NewReader("x"), 1); err == nil || errors.Is(err, storage.ErrExists) {
		t.Fatalf("PutIfAbsent over a directory = %v, want a conflict error that is not ErrExists", err)
	}
	if err := l.Put(ctx, "a", strings.NewReader("x"), 1); err == nil {
		t.Fatal("Put over a directory succeeded")
	}
	if err := l.Put(ctx, "a/b/c", strings.NewReader("x"), 1); err == nil || !strings.Contains(err.Error(), "a/b/c") {
		t.Fatalf("Put below an object = %v, want an error naming the key", err)
	}
	if err := l.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete of a directory-shaped absent key: %v", err)
	}
	if got, err := l.Stat(ctx, "a/b"); err != nil || got.Size != 1 {
		t.Fatalf("a/b damaged: %v %v", got, err)
	}
}

func TestLocalURI(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	if err := l.Put(ctx, "x/y.csv", strings.NewReader("a,b\n"), 4); err != nil {
		t.Fatal(err)
	}
	uri := l.URI("x/y.csv")
	if want := "file://" + filepath.ToSlash(filepath.Join(l.Root(), "x", "y.csv")); uri != want {
		t.Fatalf("URI = %q, want %q", uri, want)
	}
	rc, size, err := storage.OpenFileURI(uri)
	if err != nil {
		t.Fatalf("OpenFileURI(URI(key)): %v", err)
	}
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	if size != 4 || string(data) != "a,b\n" {
		t.Fatalf("OpenFileURI = (%q, %d), want (%q, 4)", data, size, "a,b\n")
	}
}

func TestOpenFileURI(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(dir, "abs.csv")
	if err := os.WriteFile(abs, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Relative URIs resolve against the working directory; the package directory
	// holds this test file.
	tests := []struct {
		name     string
		uri      string
		wantSize int64
		wantErr  string
		notFound bool
	}{
		{"absolute", "file://" + filepath.ToSlash(abs), 5, "", false},
		{"relative", "file://local_test.go", -1, "", false},
		{"relative nested missing", "file://jobs/data/missing.csv", 0, "file://jobs/data/missing.csv", true},
		{"absolute missing", "file://" + filepath.ToSlash(filepath.Join(dir, "nope")), 0, "nope", true},
		{"below a file", "file://" + filepath.ToSlash(abs) + "/x", 0, "abs.csv/x", true},
		{"directory", "file://" + filepath.ToSlash(dir), 0, "not a regular file", false},
		{"wrong scheme", "s3://bucket/key", 0, "not a file:// URI", false},
		{"no scheme", "/etc/hosts", 0, "not a file:// URI", false},
		{"empty path", "file://", 0, "empty path", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, size, err := storage.OpenFileURI(tc.uri)
			if tc.wantErr != "" {
				if err == nil {
					rc.Close()
					t.Fatalf("OpenFileURI(%q) succeeded, want error", tc.uri)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tc.wantErr)
				}
				if got := errors.Is(err, storage.ErrNotFound); got != tc.notFound {
					t.Fatalf("errors.Is(err, ErrNotFound) = %v, want %v (err %v)", got, tc.notFound, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenFileURI(%q): %v", tc.uri, err)
			}
			defer rc.Close()
			data, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(data)) != size || (tc.wantSize >= 0 && size != tc.wantSize) {
				t.Fatalf("size %d, read %d bytes, want %d", size, len(data), tc.wantSize)
			}
		})
	}
}

func TestLocalGetDirectoryIsNotFound(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	if err := l.Put(ctx, "dir/obj", bytes.NewReader([]byte("x")), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(ctx, "dir"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get(dir) = %v, want ErrNotFound", err)
	}
}
