package storagetest

import (
	"context"
	"io"

	"github.com/cohort-dev/cohort/storage"
)

// Write operations passed to FaultBlob.BeforeWrite.
const (
	OpPut         = "put"
	OpPutIfAbsent = "putIfAbsent"
	OpDelete      = "delete"
)

// FaultBlob wraps a Blob for fault-injection tests: BeforeWrite is called before every
// write, and an error it returns fails that write without touching the store (a
// process that died just before it). Reads pass through.
type FaultBlob struct {
	storage.Blob
	// BeforeWrite, when set, is called with the operation (OpPut, OpPutIfAbsent or
	// OpDelete) and the key.
	BeforeWrite func(op, key string) error
}

var _ storage.Blob = (*FaultBlob)(nil)

func (f *FaultBlob) check(op, key string) error {
	if f.BeforeWrite == nil {
		return nil
	}
	return f.BeforeWrite(op, key)
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
