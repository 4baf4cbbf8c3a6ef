package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

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
		format, out string
		s3          storage.S3Config
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

DIR is then a Triton model repository, and what "cohort serve --model DIR" serves.
Checkpoints on S3 are read with --s3-endpoint and the AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY environment variables.`,
		Example: `  cohort export attrition-mlp-1a2b3c4d --format onnx --out models/
  cohort export attrition-mlp-1a2b3c4d --format safetensors --out models/ --s3-endpoint http://127.0.0.1:9000`,
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
			resp, err := jobCall(cmd.Context(), g, "get job", cohortv1.JobServiceClient.GetJob, &cohortv1.GetJobRequest{Id: args[0]})
			if err != nil {
				return err
			}
			job := resp.GetJob()
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
	return cmd
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
