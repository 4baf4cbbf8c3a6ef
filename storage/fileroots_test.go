package storage_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/storage"
)

// TestOpenFileURIWithin is the regression test of security issue #16: a job's
// file:// data URI read anything the worker could read (file:///proc/self/environ put
// the worker's environment into the job's status).
func TestOpenFileURIWithin(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "data")
	outside := filepath.Join(base, "secret")
	for _, d := range []string{filepath.Join(root, "sub"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "train.csv"), "a,b\n1,2\n")
	write(filepath.Join(root, "sub", "x.csv"), "x\n")
	write(filepath.Join(outside, "key"), "SECRET")
	symlink := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Skipf("symlinks: %v", err)
		}
	}
	symlink(filepath.Join(outside, "key"), "leak")
	symlink(outside, "leakdir")
	symlink("train.csv", "alias.csv")
	symlink("../secret/key", "relleak")
	// A root that is itself a symbolic link, named either way.
	linkedRoot := filepath.Join(base, "linked")
	if err := os.Symlink(root, linkedRoot); err != nil {
		t.Skipf("symlinks: %v", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	uri := func(p string) string { return "file://" + filepath.ToSlash(p) }

	tests := []struct {
		name     string
		uri      string
		roots    []string
		want     string // the content read, when no error
		outside  bool   // wants the OutsideRootsError
		wantErr  string
		notFound bool
	}{
		{name: "inside", uri: uri(filepath.Join(root, "train.csv")), roots: []string{root}, want: "a,b\n1,2\n"},
		{name: "nested", uri: uri(filepath.Join(root, "sub", "x.csv")), roots: []string{root}, want: "x\n"},
		{name: "second root", uri: uri(filepath.Join(outside, "key")), roots: []string{root, outside}, want: "SECRET"},
		{name: "symlink into another root", uri: uri(filepath.Join(root, "leak")), roots: []string{root, outside}, want: "SECRET"},
		{name: "symlink inside the root", uri: uri(filepath.Join(root, "alias.csv")), roots: []string{root}, want: "a,b\n1,2\n"},
		{name: "dot-dot staying inside", uri: uri(filepath.Join(root, "sub")) + "/../train.csv", roots: []string{root}, want: "a,b\n1,2\n"},
		{name: "relative to the working directory", uri: "file://fileroots_test.go", roots: []string{wd}, want: "package storage_test"},
		{name: "root given relative", uri: "file://fileroots_test.go", roots: []string{"."}, want: "package storage_test"},
		{name: "root that is a symlink, by the link", uri: uri(filepath.Join(linkedRoot, "train.csv")), roots: []string{linkedRoot}, want: "a,b\n1,2\n"},
		{name: "root that is a symlink, by its target", uri: uri(filepath.Join(root, "train.csv")), roots: []string{linkedRoot}, want: "a,b\n1,2\n"},

		{name: "proc environ", uri: "file:///proc/self/environ", roots: []string{root}, outside: true},
		{name: "etc passwd", uri: "file:///etc/passwd", roots: []string{root}, outside: true},
		{name: "relative dot-dot escape", uri: "file://../../../../../etc/passwd", roots: []string{wd}, outside: true},
		{name: "absolute dot-dot escape", uri: uri(root) + "/../secret/key", roots: []string{root}, outside: true},
		{name: "sibling with the root as prefix", uri: uri(root + "x/y.csv"), roots: []string{root}, outside: true},
		{name: "symlink to a file outside", uri: uri(filepath.Join(root, "leak")), roots: []string{root}, outside: true},
		{name: "relative symlink outside", uri: uri(filepath.Join(root, "relleak")), roots: []string{root}, outside: true},
		{name: "through a symlinked directory outside", uri: uri(filepath.Join(root, "leakdir", "key")), roots: []string{root}, outside: true},
		{name: "no roots", uri: uri(filepath.Join(root, "train.csv")), roots: nil, outside: true},
		{name: "the root itself", uri: uri(root), roots: []string{root}, wantErr: "not a regular file (a directory)"},
		{name: "directory", uri: uri(filepath.Join(root, "sub")), roots: []string{root}, wantErr: "not a regular file (a directory)"},
		{name: "missing", uri: uri(filepath.Join(root, "nope.csv")), roots: []string{root}, wantErr: "nope.csv", notFound: true},
		{name: "below a file", uri: uri(filepath.Join(root, "train.csv", "x")), roots: []string{root}, wantErr: "train.csv/x", notFound: true},
		{name: "wrong scheme", uri: "s3://bucket/key", roots: []string{root}, wantErr: "not a file:// URI"},
		{name: "empty path", uri: "file://", roots: []string{root}, wantErr: "empty path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, size, err := storage.OpenFileURIWithin(tc.uri, tc.roots)
			switch {
			case tc.outside:
				if err == nil {
					rc.Close()
					t.Fatalf("OpenFileURIWithin(%q, %q) succeeded, want it refused", tc.uri, tc.roots)
				}
				var oe *storage.OutsideRootsError
				if !errors.As(err, &oe) || !errors.Is(err, storage.ErrOutsideRoots) {
					t.Fatalf("error %v (%T), want an *OutsideRootsError", err, err)
				}
				if !strings.HasPrefix(err.Error(), tc.uri+" is outside the data roots [") {
					t.Fatalf("error %q does not name the URI and the roots", err)
				}
				if strings.Contains(err.Error(), "SECRET") {
					t.Fatalf("error %q quotes the file", err)
				}
				return
			case tc.wantErr != "":
				if err == nil {
					rc.Close()
					t.Fatalf("OpenFileURIWithin(%q) succeeded, want error", tc.uri)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, storage.ErrNotFound) != tc.notFound {
					t.Fatalf("error %v, want containing %q (not found: %v)", err, tc.wantErr, tc.notFound)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenFileURIWithin(%q, %q): %v", tc.uri, tc.roots, err)
			}
			defer rc.Close()
			data, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(data), tc.want) || int64(len(data)) != size {
				t.Fatalf("read %q (size %d), want it to start with %q", data, size, tc.want)
			}
		})
	}
}

func TestOutsideRootsErrorMessage(t *testing.T) {
	err := &storage.OutsideRootsError{URI: "file:///proc/self/environ", Roots: []string{"/srv/data"}}
	if want := "file:///proc/self/environ is outside the data roots [/srv/data]"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
}
