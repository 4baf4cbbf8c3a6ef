package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/audit"
	"github.com/cohort-dev/cohort/export"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker"
)

func init() { registerCommand(newExportCmd) }

// exportResult is the -o json output of `cohort export`.
type exportResult struct {
	JobID      string `json:"job_id"`
	Format     string `json:"format"`
	Checkpoint string `json:"checkpoint"`
	Step       int64  `json:"step"`
	Epoch      int    `json:"epoch"`
	// Score is the exported checkpoint's score (absent: none); Best says it is the
	// best-scored one.
	Score *scoreJSON `json:"score,omitempty"`
	Best  bool       `json:"best"`
	Name  string     `json:"name"`
	Files []string   `json:"files"`
}

func newExportCmd(g *globalFlags) *cobra.Command {
	var id *jobIDArg
	var (
		format, out  string
		s3           storage.S3Config
		overrideGate bool
		reason       string
		which        string
	)
	cmd := &cobra.Command{
		Use:   "export JOB_ID --format onnx|safetensors --out DIR [--checkpoint best|latest|STEP]",
		Short: "Export a job's best (or latest, or any committed) checkpoint for serving",
		Long: `Export reads one of the job's committed checkpoints, verifies every object against its
manifest, and writes the model with its fitted preprocessing into DIR. --checkpoint
chooses which: best (the default) is the best-scored one by the job's
spec.checkpoint.scoreBy, the one the job itself exported ("cohort checkpoint list"
marks it BEST; a job trained before checkpoints had scores falls back to the latest);
latest is the one the job record points at; a number is the checkpoint of that step.
DIR then holds:

  DIR/model.safetensors              weights, architecture and preprocessing as metadata
  DIR/<name>/config.pbtxt            Triton model configuration (--format onnx)
  DIR/<name>/1/model.onnx            ONNX opset 13 model (--format onnx)

  DIR/report.json, DIR/model_card.md the model's audit and explanations (see cohort job report),
                                     when the checkpoint is the one the job exported: they
                                     describe its parameters

DIR is then a Triton model repository, and what "cohort serve --model DIR" serves.
Checkpoints on S3 are read with --s3-endpoint and the AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY environment variables.

A job whose spec.audit.gate failed is not exported: export refuses it (exit status 2)
and names each failing figure. --override-gate --reason TEXT exports it anyway and
records the override (who: your ACL token's name, or your user name marked
unverified on a cluster without ACLs; why; when) in the job record and in the
exported report.json and model card. Overriding needs an admin token.`,
		Example: `  cohort export attrition-mlp-1a2b3c4d --format onnx --out models/
  cohort export attrition-mlp-1a2b3c4d --format onnx --out models/ --checkpoint latest
  cohort export attrition-mlp-1a2b3c4d --format safetensors --out models/ --checkpoint 342
  cohort export attrition-mlp-1a2b3c4d --format safetensors --out models/ --s3-endpoint http://127.0.0.1:9000
  cohort export attrition-mlp-1a2b3c4d --format onnx --out models/ --override-gate --reason "reviewed by HR legal, ticket 42"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case export.FormatONNX, export.FormatSafetensors:
			default:
				return usageErr("--format: %q is not one of onnx, safetensors", format)
			}
			if out == "" {
				return usageErr("--out: an output directory is required")
			}
			if reason != "" && !overrideGate {
				return usageErr("--reason: only with --override-gate")
			}
			if overrideGate && strings.TrimSpace(reason) == "" {
				return usageErr("--override-gate: --reason TEXT is required: say why the model is exported although its gate failed")
			}
			wantStep := int64(-1)
			switch which {
			case "best", "latest":
			default:
				n, err := strconv.ParseInt(which, 10, 64)
				if err != nil || n < 0 {
					return usageErr("--checkpoint: %q is not best, latest or a step number", which)
				}
				wantStep = n
			}
			jobID, err := id.resolve(cmd.Context(), g, args)
			if err != nil {
				return err
			}
			resp, err := jobCall(cmd.Context(), g, "get job", cohortv1.JobServiceClient.GetJob, &cohortv1.GetJobRequest{Id: jobID})
			if err != nil {
				return err
			}
			job := resp.GetJob()
			gate := job.GetGate()
			switch {
			case gate != nil && !gate.GetPassed() && !overrideGate:
				return usageErr("job %s: export refused: its audit gate failed:\n  - %s\n(cohort job report %s shows the audit; --override-gate --reason TEXT exports it anyway and records who and why)",
					job.GetId(), strings.Join(gate.GetReasons(), "\n  - "), job.GetId())
			case overrideGate && (gate == nil || gate.GetPassed()):
				return usageErr("--override-gate: job %s has no failed audit gate to override", job.GetId())
			case overrideGate:
				o, err := jobCallPrecondition(cmd.Context(), g, "override gate", cohortv1.JobServiceClient.OverrideGate,
					&cohortv1.OverrideGateRequest{Id: job.GetId(), Reason: reason, RequestedBy: localUser(), IdempotencyKey: newIdempotencyKey()})
				if err != nil {
					return err
				}
				job = o.GetJob()
				last := job.GetGate().GetOverrides()[len(job.GetGate().GetOverrides())-1]
				fmt.Fprintf(os.Stderr, "export gate of job %s overridden by %s: %s\n", job.GetId(), last.GetBy(), last.GetReason())
			}
			if job.GetCheckpoint() == "" {
				return usageErr("job %s (%s) has no committed checkpoint: nothing to export", job.GetId(), stateName(job.GetState()))
			}
			ckpt, best, err := chooseCheckpoint(cmd, job, which, wantStep, s3)
			if err != nil {
				return err
			}
			cfg := storage.DefaultS3Config()
			cfg.Endpoint, cfg.Region, cfg.PathStyle = s3.Endpoint, s3.Region, s3.PathStyle
			b, man, err := worker.CheckpointBundle(cmd.Context(), ckpt, cfg)
			if err != nil {
				return fmt.Errorf("export job %s: %w", job.GetId(), err)
			}
			// The job's report describes the parameters the job exported (before jobs
			// had an exported checkpoint: its last, the latest).
			reported := job.GetCheckpoint()
			if e := job.GetExportedFrom(); e != nil {
				reported = e.GetCheckpoint()
			}
			// A binary model's decision threshold (spec.export.threshold) was fixed or
			// fitted for the checkpoint the job exported: its label keeps it.
			if th, ok := job.GetMetrics()["threshold"]; ok && b.Arch.Task == export.TaskBinary {
				if reported == ckpt {
					b.Threshold = th
					b.Metadata[export.MetaThreshold] = strconv.FormatFloat(th, 'g', -1, 64)
				} else {
					fmt.Fprintf(os.Stderr, "note: the job's decision threshold %g belongs to the checkpoint it exported (%s); step %d's label uses %g\n",
						th, reported, man.Step, export.DefaultThreshold)
				}
			}
			files, err := b.Files([]string{format})
			if err != nil {
				return fmt.Errorf("export job %s: %w", job.GetId(), err)
			}
			switch {
			case job.GetReport() == "":
			case reported != ckpt:
				fmt.Fprintf(os.Stderr, "note: the job's report.json and model card describe the checkpoint it exported (%s), not step %d: left out\n", reported, man.Step)
			default:
				extra, err := reportExportFiles(cmd.Context(), g, job.GetId())
				if err != nil {
					return err
				}
				files = append(files, extra...)
			}
			written, err := writeExportDir(out, files)
			if err != nil {
				return err
			}
			res := exportResult{JobID: job.GetId(), Format: format, Checkpoint: ckpt, Step: man.Step, Epoch: man.Epoch, Best: best,
				Name: b.Name, Files: written}
			if sc := man.Score; sc != nil {
				res.Score = &scoreJSON{Metric: sc.Metric, Mode: sc.Mode, Value: sc.Value}
			}
			if g.output == "json" {
				return printJSON(stdout, res)
			}
			what := fmt.Sprintf("step %d (epoch %d", res.Step, res.Epoch)
			if res.Score != nil {
				what += ", " + formatScore(res.Score)
			}
			if res.Best {
				what += ", best"
			}
			what += ")"
			fmt.Fprintf(stdout, "exported job %s %s as %s (%s):\n", res.JobID, what, res.Name, format)
			for _, f := range written {
				fmt.Fprintln(stdout, "  "+f)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "export format: onnx (Triton repository + safetensors) or safetensors")
	cmd.Flags().StringVar(&out, "out", "", "output directory (created when missing)")
	cmd.Flags().StringVar(&s3.Endpoint, "s3-endpoint", "", "S3 endpoint for s3:// checkpoints (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
	cmd.Flags().StringVar(&s3.Region, "s3-region", "", "S3 region (default $AWS_REGION)")
	cmd.Flags().BoolVar(&s3.PathStyle, "s3-path-style", true, "path-style S3 requests")
	cmd.Flags().BoolVar(&overrideGate, "override-gate", false, "export although the job's audit gate failed (needs --reason; recorded; admin token)")
	cmd.Flags().StringVar(&reason, "reason", "", "why the gate is overridden (with --override-gate)")
	cmd.Flags().StringVar(&which, "checkpoint", "best", "which checkpoint: best (by spec.checkpoint.scoreBy), latest, or a step number")
	id = jobIDFlags(cmd, g)
	return cmd
}

// chooseCheckpoint returns the manifest URI of the checkpoint --checkpoint names (which:
// best or latest; wantStep >= 0 for a step), and whether it is the best-scored one.
// best falls back to the latest for a job whose checkpoints have no score (trained
// before scores existed) when --checkpoint was not given.
func chooseCheckpoint(cmd *cobra.Command, job *cohortv1.Job, which string, wantStep int64, s3 storage.S3Config) (string, bool, error) {
	infos, key, err := jobCheckpoints(cmd.Context(), job, s3)
	if err != nil {
		return "", false, err
	}
	var bestKey string
	if best := storage.BestCheckpoints(infos, 1); len(best) == 1 {
		bestKey = best[0].ManifestKey
	}
	uriOf := func(k string) string {
		for _, in := range infos {
			if in.ManifestKey == k {
				return in.URI
			}
		}
		return ""
	}
	switch {
	case which == "latest":
		return job.GetCheckpoint(), key == bestKey, nil
	case which == "best" && bestKey != "":
		return uriOf(bestKey), true, nil
	case which == "best" && cmd.Flags().Changed("checkpoint"):
		return "", false, usageErr("--checkpoint best: no checkpoint of job %s has a score (trained before checkpoint scores existed?): use --checkpoint latest or a step from 'cohort checkpoint list %s'", job.GetId(), job.GetId())
	case which == "best":
		fmt.Fprintf(os.Stderr, "note: no checkpoint of job %s has a score: exporting the latest\n", job.GetId())
		return job.GetCheckpoint(), false, nil
	}
	var steps []string
	for _, in := range infos {
		if in.Step == wantStep && in.Error == "" {
			return in.URI, in.ManifestKey == bestKey, nil
		}
		if in.Error == "" {
			steps = append(steps, strconv.FormatInt(in.Step, 10))
		}
	}
	return "", false, usageErr("--checkpoint %d: job %s has no committed checkpoint of that step; it has %s", wantStep, job.GetId(), strings.Join(steps, ", "))
}

// reportExportFiles returns report.json (with the job record's gate overrides) and the
// model card rendered from it, as files of an export directory.
func reportExportFiles(ctx context.Context, g *globalFlags, jobID string) ([]export.File, error) {
	resp, err := jobCallPrecondition(ctx, g, "job report", cohortv1.JobServiceClient.GetJobReport, &cohortv1.GetJobReportRequest{Id: jobID})
	if err != nil {
		return nil, err
	}
	r, err := audit.DecodeReport(bytes.NewReader(resp.GetReportJson()))
	if err != nil {
		return nil, fmt.Errorf("export job %s: %s: %w", jobID, resp.GetUri(), err)
	}
	return []export.File{
		{Path: storage.ReportFile, Data: resp.GetReportJson()},
		{Path: storage.ModelCardFile, Data: []byte(audit.ModelCard(r, audit.CardInfo{}))},
	}, nil
}

// localUser names the person running the CLI (for records on clusters without ACLs).
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

// writeExportDir writes files under dir, each atomically (a temporary file renamed into
// place), and returns their paths. All content is rendered before the first write, so
// bad input leaves dir untouched.
func writeExportDir(dir string, files []export.File) ([]string, error) {
	var paths []string
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return paths, usageErr("--out: %v", err)
		}
		tmp, err := os.CreateTemp(filepath.Dir(p), ".export-*")
		if err != nil {
			return paths, usageErr("--out: %v", err)
		}
		_, werr := tmp.Write(f.Data)
		cerr := tmp.Close()
		if werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), p)
		}
		if werr != nil {
			os.Remove(tmp.Name())
			return paths, fmt.Errorf("write %s: %w", p, werr)
		}
		paths = append(paths, p)
	}
	return paths, nil
}
