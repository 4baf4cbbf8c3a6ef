package main

import (
	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/node"
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

// config returns the storage the flags name (none when they name none).
func (f *logStoreFlags) config() (node.StorageConfig, error) {
	s3cfg, err := f.s3.config(false)
	if err != nil {
		return node.StorageConfig{}, err
	}
	if s3cfg != nil {
		return node.StorageConfig{S3: s3cfg}, nil
	}
	return node.StorageConfig{Dir: f.dir}, nil
}
