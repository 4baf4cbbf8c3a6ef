package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func newJobCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Submit, inspect and cancel training jobs"}
	cmd.AddCommand(newJobSubmitCmd(g), newJobPlanCmd(g), newJobListCmd(g), newJobStatusCmd(g), newJobWatchCmd(g), newJobCancelCmd(g), newJobResumeCmd(g), newJobLogsCmd(g), newJobReportCmd(g))
	return cmd
}

// readSpec reads and validates a job spec file; problems are bad input (exit 2).
func readSpec(path string) ([]byte, *jobs.TrainingJob, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, usageErr("job spec: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, jobs.MaxSpecBytes+1))
	if err != nil {
		return nil, nil, usageErr("job spec %s: %v", path, err)
	}
	if len(b) > jobs.MaxSpecBytes {
		return nil, nil, usageErr("job spec %s: larger than %d bytes", path, jobs.MaxSpecBytes)
	}
	spec, err := jobs.Parse(b)
	if err != nil {
		return nil, nil, usageErr("job spec %s is invalid:\n%v", path, err)
	}
	return b, spec, nil
}

func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newJobSubmitCmd(g *globalFlags) *cobra.Command {
	var wait, waitForCapacity bool
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "Submit a TrainingJob spec",
		Long: `Submit a TrainingJob spec and print the job's ID (NAME-8HEX).

Before accepting it, the coordinator checks the spec and, where it can read the data
(file:// data it shares with its workers, as in cohort dev; s3:// with its S3 flags),
that each data file exists and parses and has the label and every column the spec
names; a problem is refused with exit status 2, naming the spec field. Data it cannot
read is a warning on stderr, and the job's first step checks it. A job that no
registered node can ever run (too large, no matching node, no node at all) is refused
unless --wait-for-capacity. With --wait the progress goes to stderr and, once the job
has ended, the result to stdout (-o json: one object); the exit status is 0 only if the
job succeeded.`,
		Example: `  cohort job submit jobs/examples/attrition-mlp.yaml
  cohort job submit jobs/examples/attrition-mlp.yaml --wait -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			raw, _, err := readSpec(args[0])
			if err != nil {
				return err
			}
			conn, err := connect(g)
			if err != nil {
				return err
			}
			defer conn.Close()
			return submitWithOptions(cmd.Context(), cohortv1.NewJobServiceClient(conn), raw, wait, waitForCapacity, g.output)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the job to end; exit 0 only if it succeeded")
	cmd.Flags().BoolVar(&waitForCapacity, "wait-for-capacity", false,
		"accept a job larger than the registered nodes (it waits for more nodes) instead of refusing it")
	return cmd
}

// submitAndReport submits a spec (retrying with the same idempotency key while the
// coordinator is unavailable) and, with wait, follows it to the end and prints the
// result object.
func submitAndReport(ctx context.Context, c cohortv1.JobServiceClient, raw []byte, wait bool, output string) error {
	return submitWithOptions(ctx, c, raw, wait, false, output)
}

// submitRetrying calls submit with one idempotency key, 30 s per try, and tries again
// (up to five times, backing off from 100 ms) while the error is not one the user must
// fix; what names the call in errors.
func submitRetrying[T any](ctx context.Context, what string, submit func(ctx context.Context, key string) (T, error)) (T, error) {
	key := newIdempotencyKey()
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := submit(cctx, key)
		cancel()
		if err == nil {
			return resp, nil
		}
		var zero T
		cerr := rpcErr(what, err)
		var ee *exitError
		if errors.As(cerr, &ee) || attempt >= 5 || ctx.Err() != nil {
			return zero, cerr
		}
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		}
	}
}

// submitWithOptions is submitAndReport; waitForCapacity accepts a job larger than the
// registered nodes instead of having it refused.
func submitWithOptions(ctx context.Context, c cohortv1.JobServiceClient, raw []byte, wait, waitForCapacity bool, output string) error {
	resp, err := submitRetrying(ctx, "submit job", func(ctx context.Context, key string) (*cohortv1.SubmitJobResponse, error) {
		return c.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: raw, IdempotencyKey: key, WaitForCapacity: waitForCapacity})
	})
	if err != nil {
		return err
	}
	job := resp.GetJob()
	printWarnings(resp.GetWarnings())
	if !wait {
		if output == "json" {
			return printJSON(stdout, map[string]any{"job_id": job.GetId(), "status": stateName(job.GetState())})
		}
		fmt.Fprintf(stdout, "submitted job %s (%s)\n", job.GetId(), stateName(job.GetState()))
		return nil
	}
	fmt.Fprintf(os.Stderr, "submitted job %s\n", job.GetId())
	final, err := watchUntilDone(ctx, c, job.GetId(), os.Stderr)
	if err != nil {
		return err
	}
	return reportResult(final, output)
}

// printWarnings writes the coordinator's pre-flight warnings (what it could not check)
// to standard error, so that -o json output stays one object.
func printWarnings(warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
}

// reportResult prints the result object and maps the job's outcome to the exit status.
func reportResult(j *cohortv1.Job, output string) error {
	res := resultOf(j)
	if output == "json" {
		if err := printJSON(stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "job %s %s\n", res.JobID, res.Status)
		if res.Message != "" {
			fmt.Fprintf(stdout, "  message: %s\n", res.Message)
		}
		if len(res.Metrics) > 0 {
			fmt.Fprintf(stdout, "  metrics: %s\n", formatMetrics(res.Metrics))
		}
		if res.Checkpoint != "" {
			fmt.Fprintf(stdout, "  checkpoint: %s\n", res.Checkpoint)
		}
		if res.ExportedStep != nil {
			fmt.Fprintf(stdout, "  exported: step %d (epoch %d), %s\n", *res.ExportedStep, *res.ExportedEpoch, res.ExportedCheckpoint)
		}
		for _, e := range res.Exports {
			fmt.Fprintf(stdout, "  export: %s\n", e)
		}
		if res.Report != "" {
			fmt.Fprintf(stdout, "  report: %s (cohort job report %s)\n", res.Report, res.JobID)
		}
		if g := res.Gate; g != nil {
			printGate(stdout, g)
		}
	}
	if j.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		if output == "json" {
			return &exitError{code: 1, err: errSilentFailure}
		}
		return &exitError{code: 1, err: fmt.Errorf("job %s %s: %s", res.JobID, res.Status, res.Message)}
	}
	return nil
}

func newJobListCmd(g *globalFlags) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List jobs",
		Example: "  cohort job list\n  cohort job list -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := jobCall(cmd.Context(), g, "list jobs", cohortv1.JobServiceClient.ListJobs, &cohortv1.ListJobsRequest{Namespace: namespace})
			if err != nil {
				return err
			}
			if g.output == "json" {
				out := make([]map[string]any, 0, len(resp.GetJobs()))
				for _, j := range resp.GetJobs() {
					out = append(out, jobSummary(j))
				}
				return printJSON(stdout, out)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAMESPACE\tSTATE\tEPOCH\tSUBMITTED")
			for _, j := range resp.GetJobs() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", j.GetId(), j.GetNamespace(), stateName(j.GetState()),
					j.GetProgress().GetEpoch(), j.GetProgress().GetTotalEpochs(),
					time.Unix(0, j.GetSubmitTimeUnixNano()).Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only jobs of this namespace")
	return cmd
}

func jobSummary(j *cohortv1.Job) map[string]any {
	return map[string]any{
		"job_id": j.GetId(), "name": j.GetName(), "namespace": j.GetNamespace(), "status": stateName(j.GetState()),
		"epoch": j.GetProgress().GetEpoch(), "total_epochs": j.GetProgress().GetTotalEpochs(),
		"submitted": time.Unix(0, j.GetSubmitTimeUnixNano()).UTC().Format(time.RFC3339Nano),
	}
}

// planTaskJSON is one placement of `job plan -o json`.
type planTaskJSON struct {
	Task      string `json:"task"`
	Node      string `json:"node"`
	CPUMillis int64  `json:"cpu_millis"`
	Memory    int64  `json:"memory_bytes"`
	GPUs      int32  `json:"gpus"`
}

// planJSON is the contract shape of `job plan -o json`.
type planJSON struct {
	Feasible    bool           `json:"feasible"`
	Placements  []planTaskJSON `json:"placements"`
	Reasons     []string       `json:"reasons"`
	Preemptions []string       `json:"preemptions"`
	// Shrinks are the running elastic jobs that would give up workers ("JOB: N
	// workers"), tried before any preemption.
	Shrinks   []string `json:"shrinks"`
	NeverFits bool     `json:"never_fits"`
	// Notes say how placement preferences shaped the plan (shard spreading).
	Notes []string `json:"notes"`
}

func newJobPlanCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "plan FILE",
		Short: "Dry-run the scheduler for a spec: where it would run now, or why not",
		Long: `Dry-run the scheduler for a spec: where it would run now, or why not. It commits
nothing. The spec and its data get the checks 'job submit' makes (a missing data file or
a label not in the data: exit status 2; data the coordinator cannot read: a warning on
stderr).`,
		Example: `  cohort job plan jobs/examples/attrition-mlp.yaml
  cohort job plan jobs/examples/attrition-mlp.yaml -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			raw, _, err := readSpec(args[0])
			if err != nil {
				return err
			}
			resp, err := jobCall(cmd.Context(), g, "plan job", cohortv1.JobServiceClient.PlanJob, &cohortv1.PlanJobRequest{SpecYaml: raw})
			if err != nil {
				return err
			}
			printWarnings(resp.GetWarnings())
			out := planJSON{Feasible: resp.GetFeasible(), Placements: []planTaskJSON{}, Reasons: resp.GetReasons(),
				Preemptions: resp.GetPreemptions(), Shrinks: resp.GetShrinks(), NeverFits: resp.GetNeverFits()}
			if out.Reasons == nil {
				out.Reasons = []string{}
			}
			if out.Preemptions == nil {
				out.Preemptions = []string{}
			}
			if out.Shrinks == nil {
				out.Shrinks = []string{}
			}
			out.Notes = append([]string{}, resp.GetNotes()...)
			for _, p := range resp.GetPlacements() {
				r := p.GetResources()
				out.Placements = append(out.Placements, planTaskJSON{Task: p.GetTask(), Node: p.GetNodeId(),
					CPUMillis: r.GetCpuMillis(), Memory: r.GetMemoryBytes(), GPUs: r.GetGpus()})
			}
			if g.output == "json" || g.output == "yaml" {
				return printJSON(stdout, out)
			}
			if out.Feasible {
				fmt.Fprintln(stdout, "feasible: the job would be placed now")
			} else {
				fmt.Fprintln(stdout, "not feasible now")
			}
			if out.NeverFits {
				fmt.Fprintln(stdout, "  the job can never fit the registered nodes; submit would refuse it without --wait-for-capacity")
			}
			for _, r := range out.Reasons {
				fmt.Fprintf(stdout, "  reason: %s\n", r)
			}
			for _, j := range out.Shrinks {
				fmt.Fprintf(stdout, "  would shrink: %s\n", j)
			}
			for _, j := range out.Preemptions {
				fmt.Fprintf(stdout, "  would preempt: %s\n", j)
			}
			for _, n := range out.Notes {
				fmt.Fprintf(stdout, "  note: %s\n", n)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			if len(out.Placements) > 0 {
				fmt.Fprintln(tw, "  TASK\tNODE\tCPU\tMEMORY\tGPUS")
			}
			for _, p := range out.Placements {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\n", p.Task, p.Node, humanCPU(p.CPUMillis), humanBytes(p.Memory), p.GPUs)
			}
			return tw.Flush()
		},
	}
}

func newJobStatusCmd(g *globalFlags) *cobra.Command {
	var id *jobIDArg
	cmd := &cobra.Command{
		Use:   "status JOB_ID",
		Short: "Show a job: state, progress, metrics, placement and why it is pending",
		Long: `Show a job: state, progress, metrics, placement and why it is pending.

` + jobIDHelp,
		Example: "  cohort job status attrition-mlp-1a2b3c4d -o json\n  cohort job status attrition-mlp --latest",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			jobID, err := id.resolve(cmd.Context(), g, args)
			if err != nil {
				return err
			}
			resp, err := jobCall(cmd.Context(), g, "get job", cohortv1.JobServiceClient.GetJob, &cohortv1.GetJobRequest{Id: jobID})
			if err != nil {
				return err
			}
			if g.output == "json" {
				b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(resp)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(stdout, string(b))
				return err
			}
			j := resp.GetJob()
			fmt.Fprintf(stdout, "job %s (%s/%s): %s\n", j.GetId(), j.GetNamespace(), j.GetName(), stateName(j.GetState()))
			if j.GetStatusMessage() != "" {
				fmt.Fprintf(stdout, "  message: %s\n", j.GetStatusMessage())
			}
			for _, r := range j.GetPendingReasons() {
				fmt.Fprintf(stdout, "  pending: %s\n", r)
			}
			if j.GetGeneration() > 1 || j.GetRestarts() > 0 {
				fmt.Fprintf(stdout, "  generation: %d, restarts: %d of %d\n", j.GetGeneration(), j.GetRestarts(), j.GetMaxRestarts())
			}
			if p := j.GetProgress(); p != nil {
				fmt.Fprintf(stdout, "  progress: epoch %d/%d, step %d/%d, loss %.4f, %s samples/s\n",
					p.GetEpoch(), p.GetTotalEpochs(), p.GetStep(), p.GetTotalSteps(), p.GetLoss(), humanRate(p.GetSamplesPerSecond()))
				if tr := formatTraffic(p); tr != "" {
					fmt.Fprintf(stdout, "  traffic: %s\n", tr)
				}
			}
			if len(j.GetMetrics()) > 0 {
				fmt.Fprintf(stdout, "  metrics: %s\n", formatMetrics(j.GetMetrics()))
			}
			if j.GetCheckpoint() != "" {
				fmt.Fprintf(stdout, "  checkpoint: %s\n", j.GetCheckpoint())
			}
			if e := j.GetExportedFrom(); e != nil {
				fmt.Fprintf(stdout, "  exported: step %d (epoch %d), %s\n", e.GetStep(), e.GetEpoch(), e.GetCheckpoint())
			}
			for _, e := range j.GetExports() {
				fmt.Fprintf(stdout, "  export: %s\n", e)
			}
			if j.GetReport() != "" {
				fmt.Fprintf(stdout, "  report: %s (cohort job report %s)\n", j.GetReport(), j.GetId())
			}
			if gt := gateOf(j.GetGate()); gt != nil {
				printGate(stdout, gt)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  TASK\tKIND\tNODE\tSTATE\tMESSAGE")
			for _, a := range resp.GetAllocations() {
				kind := strings.ToLower(strings.TrimPrefix(a.GetKind().String(), "TASK_KIND_"))
				fmt.Fprintf(tw, "  %s\t%s %d\t%s\t%s\t%s\n", a.GetId(), kind, a.GetIndex(), a.GetNodeId(), taskStateName(a.GetState()), a.GetMessage())
			}
			return tw.Flush()
		},
	}
	id = jobIDFlags(cmd, g)
	return cmd
}

// jobIDHelp says what a JOB_ID argument may be.
const jobIDHelp = `JOB_ID is the ID that 'job submit' printed (NAME-8HEX, also in 'cohort job list'), a
unique prefix of it, or the job's name when one job has it; --latest takes the newest
job (of that name, if one is given).`

func newJobWatchCmd(g *globalFlags) *cobra.Command {
	var id *jobIDArg
	cmd := &cobra.Command{
		Use:   "watch JOB_ID",
		Short: "Follow a job's progress until it ends",
		Long: `Follow a job's progress until it ends; the exit status is 0 only if it succeeded.

` + jobIDHelp,
		Example: "  cohort job watch attrition-mlp-1a2b3c4d\n  cohort job watch --latest",
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := connect(g)
			if err != nil {
				return err
			}
			defer conn.Close()
			c := cohortv1.NewJobServiceClient(conn)
			jobID, err := id.resolveWith(cmd.Context(), c, args)
			if err != nil {
				return err
			}
			final, err := watchUntilDone(cmd.Context(), c, jobID, os.Stderr)
			if err != nil {
				return err
			}
			return reportResult(final, g.output)
		},
	}
	id = jobIDFlags(cmd, g)
	return cmd
}

func newJobCancelCmd(g *globalFlags) *cobra.Command {
	var reason string
	var id *jobIDArg
	cmd := &cobra.Command{
		Use:   "cancel JOB_ID",
		Short: "Cancel a job",
		Long: `Cancel a job.

` + jobIDHelp,
		Example: "  cohort job cancel attrition-mlp-1a2b3c4d --reason 'wrong data'",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			jobID, err := id.resolve(cmd.Context(), g, args)
			if err != nil {
				return err
			}
			resp, err := jobCall(cmd.Context(), g, "cancel job", cohortv1.JobServiceClient.CancelJob, &cohortv1.CancelJobRequest{Id: jobID, Reason: reason})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(stdout, jobSummary(resp.GetJob()))
			}
			fmt.Fprintf(stdout, "job %s %s\n", resp.GetJob().GetId(), stateName(resp.GetJob().GetState()))
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "cancelled by user", "why the job is cancelled")
	id = jobIDFlags(cmd, g)
	return cmd
}
