package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

func init() { registerCommand(newCheckpointCmd) }

func newCheckpointCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Inspect a job's checkpoints",
	}
	cmd.AddCommand(newCheckpointListCmd(g))
	return cmd
}

// checkpointRow is one line of `cohort checkpoint list`.
type checkpointRow struct {
	Step        int64  `json:"step"`
	Epoch       int    `json:"epoch"`
	StepInEpoch int64  `json:"step_in_epoch"`
	Generation  uint64 `json:"generation"`
	Created     string `json:"created"`
	SizeBytes   int64  `json:"size_bytes"`
	Objects     int    `json:"objects"`
	URI         string `json:"uri"`
	// Latest marks the checkpoint the job record (Raft) points at: the one a resumed
	// job starts from.
	Latest bool   `json:"latest"`
	Error  string `json:"error,omitempty"`
}

func newCheckpointListCmd(g *globalFlags) *cobra.Command {
	var s3 storage.S3Config
	cmd := &cobra.Command{
		Use:   "list JOB_ID",
		Short: "List a job's committed checkpoints (step, epoch, time, size) and mark the latest",
		Long: `List the committed checkpoints of a job: those whose manifest was written, oldest
first. The one the job record points at (LATEST) is the only truth about the latest
checkpoint: a job placed again resumes from it, retention never deletes it, and
export reads it. The store is found from that pointer; s3:// checkpoints are read
with --s3-endpoint and the AWS_* credentials.`,
		Example: `  cohort checkpoint list attrition-mlp-1a2b3c4d
  cohort checkpoint list attrition-mlp-1a2b3c4d -o json
  AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… cohort checkpoint list JOB --s3-endpoint http://127.0.0.1:7070`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := jobCall(cmd.Context(), g, "get job", cohortv1.JobServiceClient.GetJob, &cohortv1.GetJobRequest{Id: args[0]})
			if err != nil {
				return err
			}
			job := resp.GetJob()
			rows := []checkpointRow{}
			if pointer := job.GetCheckpoint(); pointer != "" {
				if s3.Endpoint == "" && strings.HasPrefix(pointer, "s3://") {
					return usageErr("job %s keeps its checkpoints in S3 (%s): give --s3-endpoint", job.GetId(), pointer)
				}
				cfg := storage.DefaultS3Config()
				cfg.Endpoint, cfg.Region, cfg.PathStyle = s3.Endpoint, s3.Region, s3.PathStyle
				store, key, err := storage.OpenManifestStore(cmd.Context(), pointer, cfg)
				if err != nil {
					return fmt.Errorf("job %s: checkpoint %s: %w", job.GetId(), pointer, err)
				}
				infos, err := storage.ListCheckpoints(cmd.Context(), store, job.GetId())
				if err != nil {
					return fmt.Errorf("job %s: %w", job.GetId(), err)
				}
				found := false
				for _, in := range infos {
					r := checkpointRow{Step: in.Step, Epoch: in.Epoch, StepInEpoch: in.StepInEpoch, Generation: in.Generation,
						Created: in.Created.UTC().Format(time.RFC3339), SizeBytes: in.Size, Objects: in.Objects, URI: in.URI,
						Latest: in.ManifestKey == key, Error: in.Error}
					found = found || r.Latest
					rows = append(rows, r)
				}
				if !found {
					return errors.New("job " + job.GetId() + " points at checkpoint " + pointer + ", which the listing of its store does not show")
				}
			}
			if g.output == "json" {
				return printJSON(stdout, rows)
			}
			if len(rows) == 0 {
				_, err := fmt.Fprintf(stdout, "job %s has no committed checkpoint\n", job.GetId())
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STEP\tEPOCH\tCREATED\tSIZE\tLATEST\tMANIFEST")
			for _, r := range rows {
				latest := ""
				if r.Latest {
					latest = "*"
				}
				where := r.URI
				if r.Error != "" {
					where += " (unreadable: " + r.Error + ")"
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", r.Step, r.Epoch, r.Created, humanBytes(r.SizeBytes), latest, where)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&s3.Endpoint, "s3-endpoint", "", "S3-compatible endpoint for s3:// checkpoints (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
	fl.StringVar(&s3.Region, "s3-region", "", "S3 region (default $AWS_REGION)")
	fl.BoolVar(&s3.PathStyle, "s3-path-style", true, "path-style requests (what self-hosted S3 servers need)")
	return cmd
}

// humanBytes formats n as B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 2 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, []string{"KiB", "MiB", "GiB"}[i])
}
