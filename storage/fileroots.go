package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrOutsideRoots is wrapped by the error of OpenFileURIWithin for a path outside
// every configured root.
var ErrOutsideRoots = errors.New("outside the data roots")

// OutsideRootsError is OpenFileURIWithin's refusal of a file:// URI whose path (as
// written, or once its symbolic links are resolved) lies outside every root. It wraps
// ErrOutsideRoots; its message names the URI and the roots, and nothing was opened.
type OutsideRootsError struct {
	// URI is the refused URI, as given.
	URI string
	// Roots are the configured roots, absolute.
	Roots []string
}

func (e *OutsideRootsError) Error() string {
	return fmt.Sprintf("%s is outside the data roots [%s]", e.URI, strings.Join(e.Roots, " "))
}

// Unwrap returns ErrOutsideRoots.
func (e *OutsideRootsError) Unwrap() error { return ErrOutsideRoots }

// OpenFileURIWithin opens the regular file a file:// URI names, and returns it with its
// size, only when the file lies inside one of roots (directories; relative ones, and
// relative URI paths such as file://jobs/data/x.csv, are taken from the working
// directory). It refuses before opening anything, with an *OutsideRootsError:
//
//   - a path outside every root once cleaned ("file://../../etc/passwd",
//     "file:///proc/self/environ" with roots [/srv/data]),
//   - a path whose symbolic links resolve outside every root.
//
// The open itself goes through os.Root on the root that holds the resolved path, so a
// symbolic link swapped in after the check cannot lead outside it either. A file that is not regular (a directory, FIFO
// or device) is refused after a stat and never opened for reading; no roots refuse
// everything. A missing file gives an error wrapping ErrNotFound.
func OpenFileURIWithin(uri string, roots []string) (io.ReadCloser, int64, error) {
	p, err := fileURIPath(uri)
	if err != nil {
		return nil, 0, err
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: open %q: %w", uri, err)
	}
	absRoots := make([]string, 0, len(roots))
	for _, r := range roots {
		if r == "" {
			continue
		}
		ar, err := filepath.Abs(r)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: data root %q: %w", r, err)
		}
		absRoots = append(absRoots, ar)
	}
	outside := &OutsideRootsError{URI: uri, Roots: absRoots}
	// The lexical check comes first: a path outside every root (as configured, or
	// resolved when a root is itself a symbolic link) is refused without a single
	// file-system call on it.
	realRoots := make([]string, len(absRoots))
	lexical := false
	for i, r := range absRoots {
		if real, err := filepath.EvalSymlinks(r); err == nil {
			realRoots[i] = real
		}
		_, underRoot := inside(abs, r)
		_, underReal := inside(abs, realRoots[i])
		if underRoot || realRoots[i] != "" && underReal {
			lexical = true
		}
	}
	if !lexical {
		return nil, 0, outside
	}
	// The same check once every symbolic link is resolved: the file must lie in a
	// root's resolved directory. The open goes through os.Root on that directory, so
	// that a link swapped in meanwhile cannot lead outside it either.
	realPath, err := filepath.EvalSymlinks(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return nil, 0, fmt.Errorf("storage: open %q: %w", uri, ErrNotFound)
	case err != nil:
		return nil, 0, fmt.Errorf("storage: open %q: %w", uri, err)
	}
	for _, root := range realRoots {
		if root == "" {
			continue
		}
		rel, ok := inside(realPath, root)
		if !ok {
			continue
		}
		dir, err := os.OpenRoot(root)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: open %q: data root %s: %w", uri, root, err)
		}
		defer dir.Close()
		f, size, err := openRegular(uri, rel, dir.Stat, func(name string) (*os.File, error) {
			return dir.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		})
		if err != nil {
			return nil, 0, err
		}
		return f, size, nil
	}
	return nil, 0, outside
}

// inside reports whether the clean absolute path is root or below it, and returns it
// relative to root.
func inside(path, root string) (string, bool) {
	rel, err := filepath.Rel(root, path)
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", false
	}
	return rel, true
}

// fileURIPath returns the path of a file:// URI, refusing an empty one or a NUL.
func fileURIPath(uri string) (string, error) {
	rest, ok := strings.CutPrefix(uri, "file://")
	if !ok {
		return "", fmt.Errorf("storage: open %q: not a file:// URI", uri)
	}
	if rest == "" {
		return "", fmt.Errorf("storage: open %q: empty path", uri)
	}
	if strings.ContainsRune(rest, 0) {
		return "", fmt.Errorf("storage: open %q: path contains NUL", uri)
	}
	return filepath.FromSlash(rest), nil
}

// openRegular opens name for reading only when it is a regular file: it stats it first,
// so that a FIFO or device is never opened (an open of a FIFO blocks until a writer
// comes), opens it non-blocking, and checks that it opened the file it stat'ed.
func openRegular(uri, name string, stat func(string) (fs.FileInfo, error), open func(string) (*os.File, error)) (*os.File, int64, error) {
	mapErr := func(err error) error {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("storage: open %q: %w", uri, ErrNotFound)
		}
		return fmt.Errorf("storage: open %q: %w", uri, err)
	}
	before, err := stat(name)
	if err != nil {
		return nil, 0, mapErr(err)
	}
	if !before.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("storage: open %q: not a regular file (%s)", uri, fileKind(before.Mode()))
	}
	f, err := open(name)
	if err != nil {
		return nil, 0, mapErr(err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("storage: open %q: %w", uri, err)
	}
	if !fi.Mode().IsRegular() || !os.SameFile(before, fi) {
		_ = f.Close()
		return nil, 0, fmt.Errorf("storage: open %q: not a regular file (replaced while opening)", uri)
	}
	return f, fi.Size(), nil
}

// OpenRegularFile opens a local path for reading only when it is a regular file, as
// OpenFileURI does: a directory, FIFO or device is refused after a stat and never
// opened, so that a FIFO cannot block the caller. A missing file gives an error
// wrapping ErrNotFound.
func OpenRegularFile(path string) (*os.File, int64, error) {
	return openRegular(path, path, os.Stat, func(name string) (*os.File, error) {
		return os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	})
}

// fileKind names a non-regular file mode for messages.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "a " + m.Type().String() + " file"
}
