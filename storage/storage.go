// Package storage is Cohort's blob-store boundary: datasets, checkpoints, exports and job
// logs all go through the Blob interface. Backends: a local directory (the embedded
// default) and S3-compatible object storage.
package storage

import (
	"context"
	"errors"
	"io"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
)

// ErrNotFound is returned (wrapped) when a key does not exist.
var ErrNotFound = errors.New("storage: object not found")

// ErrExists is returned (wrapped) by PutIfAbsent when the key already exists.
var ErrExists = errors.New("storage: object already exists")

// IsFull reports whether err says the store has no room for a write: a local
// directory's file system is full (ENOSPC) or over its quota (EDQUOT), or an S3
// server answered XMinioStorageFull. Unlike an outage, that lasts until someone frees
// space, so callers should not wait it out.
func IsFull(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	return minio.ToErrorResponse(err).Code == "XMinioStorageFull"
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Blob is a flat key space of immutable-by-convention objects. Keys use '/' as the
// separator and never start with '/'. Implementations are safe for concurrent use.
type Blob interface {
	// Put stores r under key atomically: readers see the old object or the whole new
	// one, never a part. size is the length of r, or -1 when unknown.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// PutIfAbsent is Put with a create-only condition; it returns an error wrapping
	// ErrExists when key is already present, and leaves that object unchanged.
	PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens key for reading; the error wraps ErrNotFound when it is absent.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes key; the error wraps ErrNotFound when it is absent.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List returns the objects whose keys start with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes key; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// URI names key for people and for job specs (file:///abs/path or s3://bucket/key).
	URI(key string) string
}
