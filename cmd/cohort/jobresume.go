package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func newJobResumeCmd(g *globalFlags) *cobra.Command {
	var id *jobIDArg
	var reason string
	var wait bool
	cmd := &cobra.Command{
		Use:   "resume JOB_ID",
		Short: "Resume a cancelled or failed job from its last committed checkpoint",
		Long: `Resume a cancelled or failed job (including one whose restart budget lost nodes
spent): it goes back to pending and, once placed, continues exactly from the
checkpoint its record points at (the LATEST row of 'cohort checkpoint list'):
parameters, optimizer state and data position, at a new membership generation.
A job that is pending, running or succeeded, or that ended before its first
checkpoint, is refused (exit status 2); submit its spec again to start over.`,
		Example: `  cohort job resume attrition-mlp-1a2b3c4d
  cohort job resume attrition-mlp-1a2b3c4d --wait -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := connect(g)
			if err != nil {
				return err
			}
			defer conn.Close()
			client := cohortv1.NewJobServiceClient(conn)
			jobID, err := id.resolveWith(cmd.Context(), client, args)
			if err != nil {
				return err
			}
			resp, err := client.ResumeJob(cmd.Context(), &cohortv1.ResumeJobRequest{Id: jobID, Reason: reason, IdempotencyKey: newIdempotencyKey()})
			if err != nil {
				if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
					return usageErr("%s", st.Message())
				}
				return rpcErr("resume job", err)
			}
			job := resp.GetJob()
			if !wait {
				if g.output == "json" {
					out := jobSummary(job)
					out["generation"], out["checkpoint"] = job.GetGeneration(), job.GetCheckpoint()
					return printJSON(stdout, out)
				}
				fmt.Fprintf(stdout, "job %s %s: generation %d resumes from %s\n", job.GetId(), stateName(job.GetState()),
					job.GetGeneration(), job.GetCheckpoint())
				return nil
			}
			fmt.Fprintf(os.Stderr, "resumed job %s from %s\n", job.GetId(), job.GetCheckpoint())
			for {
				final, err := watchUntilDone(cmd.Context(), client, job.GetId(), os.Stderr)
				if err != nil {
					return err
				}
				// A coordinator behind the one that resumed the job may still show the
				// ended run: only the resumed generation's end counts.
				if final.GetGeneration() >= job.GetGeneration() {
					return reportResult(final, g.output)
				}
			}
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the job is resumed (kept in its status message)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the resumed job to end; exit 0 only if it succeeded")
	id = jobIDFlags(cmd, g)
	return cmd
}
