package main

import (
	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/storage"
)

// s3Flags are the --s3-* flags shared by `cohort dev` and the node agents.
type s3Flags struct {
	cfg storage.S3Config
}

func (f *s3Flags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.cfg.Endpoint, "s3-endpoint", "", "S3-compatible endpoint (http://host:port or host:port for TLS); with --s3-bucket, all storage goes to S3 (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
	fl.StringVar(&f.cfg.Bucket, "s3-bucket", "", "S3 bucket for checkpoints, exports and logs")
	fl.StringVar(&f.cfg.Region, "s3-region", "", "S3 region (default $AWS_REGION)")
	fl.StringVar(&f.cfg.Prefix, "s3-prefix", "", "key prefix inside the bucket")
	fl.BoolVar(&f.cfg.PathStyle, "s3-path-style", true, "path-style requests (what self-hosted S3 servers need)")
}

// config returns the S3 configuration the flags name, nil when S3 is not used, or a
// usage error when only half of endpoint and bucket is given.
func (f *s3Flags) config(createBucket bool) (*storage.S3Config, error) {
	if f.cfg.Endpoint == "" && f.cfg.Bucket == "" {
		return nil, nil
	}
	if f.cfg.Endpoint == "" || f.cfg.Bucket == "" {
		return nil, usageErr("--s3-endpoint and --s3-bucket go together")
	}
	c := storage.DefaultS3Config()
	c.Endpoint, c.Bucket, c.Region, c.Prefix, c.PathStyle = f.cfg.Endpoint, f.cfg.Bucket, f.cfg.Region, f.cfg.Prefix, f.cfg.PathStyle
	c.CreateBucket = createBucket
	return &c, nil
}
