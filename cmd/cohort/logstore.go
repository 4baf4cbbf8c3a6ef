package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/storage"
)

// logStoreFlags name the storage a coordinator reads task logs from (`cohort job
// logs`): the node agents' --storage-dir or S3 bucket.
type logStoreFlags struct {
	dir string
	s3  s3Flags
}

func (f *logStoreFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.dir, "storage-dir", "", "the node agents' storage directory, to serve task logs from (empty, without --s3-bucket: `job logs` is refused)")
	f.s3.register(cmd)
}

// open returns the store the flags name, or nil when they name none.
func (f *logStoreFlags) open(ctx context.Context) (storage.Blob, error) {
	s3cfg, err := f.s3.config(false)
	if err != nil {
		return nil, err
	}
	switch {
	case s3cfg != nil:
		s3, err := storage.NewS3(ctx, *s3cfg)
		if err != nil {
			return nil, usageErr("--s3-endpoint/--s3-bucket: %v", err)
		}
		return s3, nil
	case f.dir != "":
		local, err := storage.NewLocal(f.dir)
		if err != nil {
			return nil, usageErr("--storage-dir: %v", err)
		}
		return local, nil
	}
	return nil, nil
}
