package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
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
	JobID      string   `json:"job_id"`
	Format     string   `json:"format"`
	Checkpoint string   `json:"checkpoint"`
	Step       int64    `json:"step"`
	Name       string   `json:"name"`
	Files      []string `json:"files"`
}

func newExportCmd(g *globalFlags) *cobra.Command {
	var (
		format, out  string
		s3           storage.S3Config
		overrideGate bool
		reason       string
	)
	cmd := &cobra.Command{
		Use:   "export JOB_ID --format onnx|safetensors --out DIR",
		Short: "Export a job's latest checkpoint for serving",
		Long: `Export reads the job's latest committed checkpoint (through the coordinator's pointer),
verifies every object against its manifest, and writes the model with its fitted
preprocessing into DIR:

  DIR/model.safetensors              weights, architecture and preprocessing as metadata
  DIR/<name>/config.pbtxt            Triton model configuration (--format onnx)
  DIR/<name>/1/model.onnx            ONNX opset 13 model (--format onnx)

  DIR/report.json, DIR/model_card.md the model's audit and explanations (see cohort job report)

DIR is then a Triton model repository, and what "cohort serve --model DIR" serves.
Checkpoints on S3 are read with --s3-endpoint and the AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY environment variables.

A job whose spec.audit.gate failed is not exported: export refuses it (exit status 2)
and names each failing figure. --override-gate --reason TEXT exports it anyway and
records the override (who: your ACL token's name, or your user name marked
unverified on a cluster without ACLs; why; when) in the job record and in the
exported report.json and model card. Overriding needs an admin token.`,
		Example: `  cohort export attrition-mlp-1a2b3c4d --format onnx --out models/
  cohort export attrition-mlp-1a2b3c4d --format safetensors --out models/ --s3-endpoint http://127.0.0.1:9000
  cohort export attrition-mlp-1a2b3c4d --format onnx --out models/ --override-gate --reason "reviewed by HR legal, ticket 42"`,
		Args: exactArgs(1),
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
			resp, err := jobCall(cmd.Context(), g, "get job", cohortv1.JobServiceClient.GetJob, &cohortv1.GetJobRequest{Id: args[0]})
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
					&cohortv1.OverrideGateRequest{Id: job.GetId(), Reason: reason, RequestedBy: localUser()})
				if err != nil {
					return err
				}
				job = o.GetJob()
				last := job.GetGate().GetOverrides()[len(job.GetGate().GetOverrides())-1]
				fmt.Fprintf(os.Stderr, "export gate of job %s overridden by %s: %s\n", job.GetId(), last.GetBy(), last.GetReason())
			}
			ckpt := job.GetCheckpoint()
			if ckpt == "" {
				return usageErr("job %s (%s) has no committed checkpoint: nothing to export", job.GetId(), stateName(job.GetState()))
			}
			cfg := storage.DefaultS3Config()
			cfg.Endpoint, cfg.Region, cfg.PathStyle = s3.Endpoint, s3.Region, s3.PathStyle
			b, man, err := worker.CheckpointBundle(cmd.Context(), ckpt, cfg)
			if err != nil {
				return fmt.Errorf("export job %s: %w", job.GetId(), err)
			}
			files, err := b.Files([]string{format})
			if err != nil {
				return fmt.Errorf("export job %s: %w", job.GetId(), err)
			}
			if job.GetReport() != "" {
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
			res := exportResult{JobID: job.GetId(), Format: format, Checkpoint: ckpt, Step: man.Step, Name: b.Name, Files: written}
			if g.output == "json" {
				return printJSON(stdout, res)
			}
			fmt.Fprintf(stdout, "exported job %s step %d as %s (%s):\n", res.JobID, res.Step, res.Name, format)
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
	return cmd
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
