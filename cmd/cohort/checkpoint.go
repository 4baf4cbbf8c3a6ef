package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	// Score is the checkpoint's spec.checkpoint.scoreBy score (absent: none; only
	// checkpoints written at an epoch end have one).
	Score *scoreJSON `json:"score,omitempty"`
	// Latest marks the checkpoint the job record (Raft) points at: the one a resumed
	// job starts from.
	Latest bool `json:"latest"`
	// Best marks the best-scored checkpoint: the one the job exports (and `cohort
	// export --checkpoint best`).
	Best  bool   `json:"best"`
	Error string `json:"error,omitempty"`
}

// scoreJSON is a checkpoint's score in the CLI's JSON output.
type scoreJSON struct {
	Metric string  `json:"metric"`
	Mode   string  `json:"mode"`
	Value  float64 `json:"value"`
}

// jobCheckpoints lists the committed checkpoints of job, from the store its checkpoint
// pointer names (s3:// stores need s3's endpoint), and returns them with the key of
// the one the pointer names. A job without a checkpoint has none (nil).
func jobCheckpoints(ctx context.Context, job *cohortv1.Job, s3 storage.S3Config) ([]storage.CheckpointInfo, string, error) {
	pointer := job.GetCheckpoint()
	if pointer == "" {
		return nil, "", nil
	}
	if s3.Endpoint == "" && strings.HasPrefix(pointer, "s3://") {
		return nil, "", usageErr("job %s keeps its checkpoints in S3 (%s): give --s3-endpoint", job.GetId(), pointer)
	}
	cfg := storage.DefaultS3Config()
	cfg.Endpoint, cfg.Region, cfg.PathStyle = s3.Endpoint, s3.Region, s3.PathStyle
	store, key, err := storage.OpenManifestStore(ctx, pointer, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("job %s: checkpoint %s: %w", job.GetId(), pointer, err)
	}
	infos, err := storage.ListCheckpoints(ctx, store, job.GetId())
	if err != nil {
		return nil, "", fmt.Errorf("job %s: %w", job.GetId(), err)
	}
	if !slices.ContainsFunc(infos, func(in storage.CheckpointInfo) bool { return in.ManifestKey == key }) {
		return nil, "", errors.New("job " + job.GetId() + " points at checkpoint " + pointer + ", which the listing of its store does not show")
	}
	return infos, key, nil
}

// formatScore is a score in tables: "val_auc 0.8397", or "-".
func formatScore(s *scoreJSON) string {
	if s == nil {
		return "-"
	}
	return s.Metric + " " + strconv.FormatFloat(s.Value, 'f', 4, 64)
}

func newCheckpointListCmd(g *globalFlags) *cobra.Command {
	var id *jobIDArg
	var s3 storage.S3Config
	cmd := &cobra.Command{
		Use:   "list JOB_ID",
		Short: "List a job's committed checkpoints (step, epoch, score, time, size) and mark the latest and the best",
		Long: `List the committed checkpoints of a job: those whose manifest was written, oldest
first. The one the job record points at (LATEST) is the only truth about the latest
checkpoint: a job placed again resumes from it and retention never deletes it.
Checkpoints written at an epoch end carry a SCORE, that epoch's value of the job's
spec.checkpoint.scoreBy metric; the best-scored one (BEST) is what the job exported
and what "cohort export" reads by default, and retention keeps the
spec.checkpoint.keepBest best ones. The store is found from the job's pointer;
s3:// checkpoints are read with --s3-endpoint and the AWS_* credentials.`,
		Example: `  cohort checkpoint list attrition-mlp-1a2b3c4d
  cohort checkpoint list attrition-mlp-1a2b3c4d -o json
  AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… cohort checkpoint list JOB --s3-endpoint http://127.0.0.1:7070`,
		RunE: func(cmd *cobra.Command, args []string) error {
			jobID, err := id.resolve(cmd.Context(), g, args)
			if err != nil {
				return err
			}
			resp, err := jobCall(cmd.Context(), g, "get job", cohortv1.JobServiceClient.GetJob, &cohortv1.GetJobRequest{Id: jobID})
			if err != nil {
				return err
			}
			job := resp.GetJob()
			infos, key, err := jobCheckpoints(cmd.Context(), job, s3)
			if err != nil {
				return err
			}
			rows := []checkpointRow{}
			for _, in := range infos {
				r := checkpointRow{Step: in.Step, Epoch: in.Epoch, StepInEpoch: in.StepInEpoch, Generation: in.Generation,
					Created: in.Created.UTC().Format(time.RFC3339), SizeBytes: in.Size, Objects: in.Objects, URI: in.URI,
					Latest: in.ManifestKey == key, Best: in.Best, Error: in.Error}
				if sc := in.Score; sc != nil {
					r.Score = &scoreJSON{Metric: sc.Metric, Mode: sc.Mode, Value: sc.Value}
				}
				rows = append(rows, r)
			}
			if g.output == "json" {
				return printJSON(stdout, rows)
			}
			if len(rows) == 0 {
				_, err := fmt.Fprintf(stdout, "job %s has no committed checkpoint\n", job.GetId())
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STEP\tEPOCH\tSCORE\tCREATED\tSIZE\tLATEST\tBEST\tMANIFEST")
			mark := func(b bool) string {
				if b {
					return "*"
				}
				return ""
			}
			for _, r := range rows {
				where := r.URI
				if r.Error != "" {
					where += " (unreadable: " + r.Error + ")"
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Step, r.Epoch, formatScore(r.Score), r.Created, humanBytes(r.SizeBytes),
					mark(r.Latest), mark(r.Best), where)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&s3.Endpoint, "s3-endpoint", "", "S3-compatible endpoint for s3:// checkpoints (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
	fl.StringVar(&s3.Region, "s3-region", "", "S3 region (default $AWS_REGION)")
	fl.BoolVar(&s3.PathStyle, "s3-path-style", true, "path-style requests (what self-hosted S3 servers need)")
	id = jobIDFlags(cmd, g)
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
