package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// tempPrefix starts the name of every in-flight temporary file. List ignores such files
// and ValidateKey refuses keys whose last segment starts with it.
const tempPrefix = ".tmp-"

// Local implements Blob on a directory of the local file system. Key "a/b/c" is stored
// in the file <dir>/a/b/c. Writes are atomic (a temporary file in the same directory,
// fsync, rename, fsync of the directory), so a crash leaves either the old or the new
// object, never a torn one.
//
// Unlike object stores, a directory cannot hold both "a" and "a/b"; such a Put fails
// with an error naming the key. Local is safe for concurrent use by many goroutines
// and by many processes sharing the directory.
type Local struct {
	root string
	log  *slog.Logger
}

var _ Blob = (*Local)(nil)

// NewLocal returns a Local rooted at dir, creating the directory (and its parents) when
// it does not exist. dir is made absolute so URIs stay valid after a change of the
// working directory.
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("storage: local directory: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: local directory %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("storage: create local directory %q: %w", abs, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("storage: local directory %q: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("storage: local directory %q: not a directory", abs)
	}
	return &Local{root: abs, log: slog.Default().With("component", "storage.local", "root", abs)}, nil
}

// Root returns the absolute directory that holds the objects.
func (l *Local) Root() string { return l.root }

// ValidateKey reports whether key is acceptable to every backend: non-empty, at most
// 1024 bytes, '/'-separated segments that are neither empty, "." nor "..", no leading
// '/', no backslash or NUL, and a last segment that does not start with ".tmp-".
func ValidateKey(key string) error {
	if key == "" {
		return errors.New("storage: invalid key: empty")
	}
	if len(key) > 1024 {
		return fmt.Errorf("storage: invalid key %.64q...: longer than 1024 bytes", key)
	}
	if err := validateKeyChars(key); err != nil {
		return err
	}
	segs := strings.Split(key, "/")
	for _, s := range segs {
		switch s {
		case "":
			return fmt.Errorf("storage: invalid key %q: empty path segment (leading, trailing or double '/')", key)
		case ".", "..":
			return fmt.Errorf("storage: invalid key %q: segment %q escapes or aliases the key space", key, s)
		}
	}
	if strings.HasPrefix(segs[len(segs)-1], tempPrefix) {
		return fmt.Errorf("storage: invalid key %q: last segment starts with reserved prefix %q", key, tempPrefix)
	}
	return nil
}

// validateKeyChars refuses the characters and forms that could escape a directory.
func validateKeyChars(key string) error {
	switch {
	case strings.ContainsRune(key, 0):
		return fmt.Errorf("storage: invalid key %q: contains NUL", key)
	case strings.ContainsRune(key, '\\'):
		return fmt.Errorf("storage: invalid key %q: contains a backslash", key)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("storage: invalid key %q: absolute (starts with '/')", key)
	case filepath.IsAbs(key) || filepath.VolumeName(key) != "":
		return fmt.Errorf("storage: invalid key %q: absolute path", key)
	}
	return nil
}

// validatePrefix checks a List prefix: it may be empty or end in '/', but must not
// contain "." or ".." segments, backslashes, NUL or a leading '/'.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := validateKeyChars(prefix); err != nil {
		return fmt.Errorf("storage: invalid list prefix: %w", err)
	}
	for _, s := range strings.Split(prefix, "/") {
		if s == "." || s == ".." {
			return fmt.Errorf("storage: invalid list prefix %q: segment %q", prefix, s)
		}
	}
	return nil
}

// path maps a validated key to its file.
func (l *Local) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return joinUnder(l.root, key)
}

// joinUnder maps key to its file below root, refusing a key that is absolute or whose
// cleaned path is root itself or outside it. It is defence in depth: ValidateKey
// already refuses such keys, and whatever a future change lets through, no key can
// name a file outside the storage directory.
func joinUnder(root, key string) (string, error) {
	rel := filepath.FromSlash(key)
	if filepath.IsAbs(rel) || strings.HasPrefix(key, "/") || filepath.VolumeName(rel) != "" {
		return "", fmt.Errorf("storage: invalid key %q: absolute", key)
	}
	p := filepath.Join(root, rel)
	if r, err := filepath.Rel(root, p); err != nil || r == "." || !filepath.IsLocal(r) {
		return "", fmt.Errorf("storage: invalid key %q: outside the storage directory", key)
	}
	return p, nil
}

// Put implements Blob.
func (l *Local) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return l.put(ctx, key, r, size, false)
}

// PutIfAbsent implements Blob. The object is written to a temporary file and then
// hard-linked to its final name; link(2) fails when the name exists, so of several
// concurrent callers (in any process) exactly one wins.
func (l *Local) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	return l.put(ctx, key, r, size, true)
}

func (l *Local) put(ctx context.Context, key string, r io.Reader, size int64, createOnly bool) (err error) {
	final, err := l.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: put %q: %w", key, err)
	}
	if createOnly {
		// Cheap early answer; the link below is the authoritative check.
		if fi, err := os.Lstat(final); err == nil {
			return existsErr(key, fi)
		}
	}
	dir := filepath.Dir(final)
	tmp, err := l.createTemp(dir, filepath.Base(final))
	if err != nil {
		return fmt.Errorf("storage: put %q: %w", key, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			_ = tmp.Close()
		}
		// After a successful rename the temp name is gone; after a link it must go.
		if rmErr := os.Remove(tmpName); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			l.log.Warn("remove temporary file", "path", tmpName, "err", rmErr)
		}
	}()

	n, err := io.Copy(tmp, &ctxReader{ctx: ctx, r: r})
	if err != nil {
		return fmt.Errorf("storage: put %q: write: %w", key, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("storage: put %q: size mismatch: declared %d bytes, read %d", key, size, n)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("storage: put %q: fsync: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		tmp = nil
		return fmt.Errorf("storage: put %q: close: %w", key, err)
	}
	tmp = nil
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: put %q: %w", key, err)
	}

	if createOnly {
		if err := os.Link(tmpName, final); err != nil {
			if errors.Is(err, fs.ErrExist) {
				fi, _ := os.Lstat(final)
				return existsErr(key, fi)
			}
			return fmt.Errorf("storage: put %q: link: %w", key, err)
		}
	} else {
		if err := os.Rename(tmpName, final); err != nil {
			return fmt.Errorf("storage: put %q: rename: %w", key, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("storage: put %q: fsync directory: %w", key, err)
	}
	l.log.Debug("put", "key", key, "bytes", n, "createOnly", createOnly)
	return nil
}

// existsErr explains why a create-only write found its name taken: an object (wraps
// ErrExists) or a directory of longer keys (a conflict Local cannot store).
func existsErr(key string, fi fs.FileInfo) error {
	if fi != nil && fi.IsDir() {
		return fmt.Errorf("storage: put %q: keys with this prefix and a '/' exist, a directory cannot also be an object", key)
	}
	return fmt.Errorf("storage: put %q: %w", key, ErrExists)
}

// createTemp makes the parent directories and a temporary file in dir. A concurrent
// Delete may prune the freshly made directory before the file exists, so the pair is
// retried a few times.
func (l *Local) createTemp(dir, base string) (*os.File, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("a parent of the key is an object, not a directory: %w", err)
			}
			return nil, fmt.Errorf("create directory: %w", err)
		}
		f, err := os.CreateTemp(dir, tempPrefix+base+"-*")
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("create temporary file: %w", err)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("create temporary file: directory keeps vanishing: %w", lastErr)
}

// syncDir fsyncs a directory so a rename or link in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get implements Blob.
func (l *Local) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: get %q: %w", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, l.mapErr("get", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("storage: get %q: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("storage: get %q: %w", key, ErrNotFound)
	}
	return f, nil
}

// Stat implements Blob.
func (l *Local) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := l.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: stat %q: %w", key, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, l.mapErr("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("storage: stat %q: %w", key, ErrNotFound)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// mapErr turns "does not exist" (and "a parent is a file") into ErrNotFound.
func (l *Local) mapErr(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("storage: %s %q: %w", op, key, ErrNotFound)
	}
	return fmt.Errorf("storage: %s %q: %w", op, key, err)
}

// List implements Blob. prefix is a key prefix, not a directory: "jobs/a" matches
// "jobs/a/x" and "jobs/ab". Temporary files of in-flight writes are skipped.
func (l *Local) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	// Walk only the deepest directory that every match must live under.
	start := l.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = filepath.Join(l.root, filepath.FromSlash(prefix[:i]))
	}
	out := []ObjectInfo{}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // the start directory is absent or a racing Delete pruned a directory
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() {
			rel, rerr := filepath.Rel(l.root, p)
			if rerr != nil {
				return rerr
			}
			if rel == "." {
				return nil
			}
			// Prune directories that cannot contain a match.
			dk := filepath.ToSlash(rel) + "/"
			if !strings.HasPrefix(dk, prefix) && !strings.HasPrefix(prefix, dk) {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while listing
			}
			return err
		}
		out = append(out, ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Blob. It removes the object and then every parent directory that
// became empty, up to but not including the root.
func (l *Local) Delete(ctx context.Context, key string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	if fi.IsDir() {
		return nil // a directory is not an object: the key is absent
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	for dir := filepath.Dir(p); dir != l.root && strings.HasPrefix(dir, l.root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		// Remove fails on a non-empty directory, which ends the pruning.
		if err := os.Remove(dir); err != nil {
			break
		}
	}
	l.log.Debug("delete", "key", key)
	return nil
}

// URI implements Blob: "file://" followed by the object's absolute path.
func (l *Local) URI(key string) string {
	return "file://" + filepath.ToSlash(filepath.Join(l.root, filepath.FromSlash(key)))
}

// OpenFileURI opens the local file named by a file:// URI and returns it with its
// size. "file:///abs/path" is absolute; "file://rel/path" (as in job specs, e.g.
// file://jobs/data/x.csv) is relative to the working directory. The path is used as
// written, without percent-decoding. A missing file gives an error wrapping
// ErrNotFound that names the URI; a directory, FIFO or device is refused after a stat,
// without being opened. OpenFileURI reads anywhere the process can: paths that a job
// spec names go through OpenFileURIWithin instead.
func OpenFileURI(uri string) (io.ReadCloser, int64, error) {
	p, err := fileURIPath(uri)
	if err != nil {
		return nil, 0, err
	}
	f, size, err := openRegular(uri, p, os.Stat, func(name string) (*os.File, error) {
		return os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	})
	if err != nil {
		return nil, 0, err
	}
	return f, size, nil
}

// ctxReader stops a copy once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
