package storagetest

import (
	"context"
	"io"
	"sync"

	"github.com/cohort-dev/cohort/storage"
)

// Write operations passed to FaultBlob.BeforeWrite.
const (
	OpPut         = "put"
	OpPutIfAbsent = "putIfAbsent"
	OpDelete      = "delete"
)

// FaultBlob wraps a Blob for fault-injection tests: a hook is called before every
// write, and an error it returns fails that write without touching the store (a
// process that died just before it). Reads pass through.
//
// Set the hook with SetBeforeWrite: writes of a stopped run may still be in flight
// when a test changes it.
type FaultBlob struct {
	storage.Blob

	mu          sync.Mutex
	beforeWrite func(op, key string) error
}

var _ storage.Blob = (*FaultBlob)(nil)

// SetBeforeWrite sets the hook called with the operation (OpPut, OpPutIfAbsent or
// OpDelete) and the key before every write; nil removes it.
func (f *FaultBlob) SetBeforeWrite(hook func(op, key string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.beforeWrite = hook
}

func (f *FaultBlob) check(op, key string) error {
	f.mu.Lock()
	hook := f.beforeWrite
	f.mu.Unlock()
	if hook == nil {
		return nil
	}
	return hook(op, key)
}

// Put implements storage.Blob.
func (f *FaultBlob) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := f.check(OpPut, key); err != nil {
		return err
	}
	return f.Blob.Put(ctx, key, r, size)
}

// PutIfAbsent implements storage.Blob.
func (f *FaultBlob) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := f.check(OpPutIfAbsent, key); err != nil {
		return err
	}
	return f.Blob.PutIfAbsent(ctx, key, r, size)
}

// Delete implements storage.Blob.
func (f *FaultBlob) Delete(ctx context.Context, key string) error {
	if err := f.check(OpDelete, key); err != nil {
		return err
	}
	return f.Blob.Delete(ctx, key)
}
