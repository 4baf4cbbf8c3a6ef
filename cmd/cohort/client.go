package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/node"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// dial opens a client connection to a coordinator. address may list several
// coordinators, comma-separated: the connection uses the first one that answers and
// moves to another when it fails, and calls retry while no coordinator is available.
// creds are the transport credentials (nil: plaintext; see clientCredentials); extra
// adds dial options (an ACL token: tokenDialOptions).
func dial(address string, creds credentials.TransportCredentials, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	var addrs []string
	for _, a := range strings.Split(address, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, usageErr("--address: no coordinator address given")
	}
	dialer := node.DialCoordinators
	if len(addrs) > 1 {
		dialer = dialFailover // dial.go: health-aware, leader hints, per-attempt deadlines
	}
	conn, err := dialer(addrs, creds, extra...)
	if err != nil {
		return nil, usageErr("--address %q: %v", address, err)
	}
	return conn, nil
}

// rpcErr turns a gRPC error into a CLI error: InvalidArgument is bad input (exit 2).
func rpcErr(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return &exitError{code: 2, err: fmt.Errorf("%s", st.Message())}
	case codes.NotFound:
		return &exitError{code: 2, err: fmt.Errorf("%s: %s", what, st.Message())}
	case codes.Unavailable:
		if hint := connectionHint(st.Message()); hint != "" {
			return fmt.Errorf("%s: %s", what, hint)
		}
		return fmt.Errorf("%s: coordinator unavailable: %s", what, st.Message())
	}
	return fmt.Errorf("%s: %s", what, st.Message())
}

// isArgsError reports whether err is one of cobra's argument or command errors.
func isArgsError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "invalid argument"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// exactArgs is cobra.ExactArgs with a bad-input exit status.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErr("%s takes %d argument(s), got %d (see --help)", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}

// jobResult is the contract's result object of `job submit --wait` and `dev --run`.
type jobResult struct {
	JobID      string             `json:"job_id"`
	Status     string             `json:"status"`
	Message    string             `json:"message,omitempty"`
	Metrics    map[string]float64 `json:"metrics"`
	Checkpoint string             `json:"checkpoint"`
	Exports    []string           `json:"exports"`
	// ExportedStep and ExportedEpoch name the checkpoint the exports and the metrics
	// come from (the best by spec.checkpoint.scoreBy), ExportedCheckpoint its manifest;
	// absent before the job exported.
	ExportedStep       *int64 `json:"exported_step,omitempty"`
	ExportedEpoch      *int32 `json:"exported_epoch,omitempty"`
	ExportedCheckpoint string `json:"exported_checkpoint,omitempty"`
	// Report is the URI of the model's report.json (audit and explanations).
	Report string `json:"report,omitempty"`
	// Gate is the outcome of spec.audit.gate; absent when the spec asks for none.
	Gate *gateJSON `json:"gate,omitempty"`
}

// gateJSON is a job's export gate in the CLI's JSON output.
type gateJSON struct {
	Passed    bool           `json:"passed"`
	Reasons   []string       `json:"reasons"`
	Overrides []overrideJSON `json:"overrides,omitempty"`
}

// overrideJSON is one recorded gate override.
type overrideJSON struct {
	By     string `json:"by"`
	Reason string `json:"reason"`
	Time   string `json:"time"`
}

// gateOf converts a job's gate for JSON output (nil: none).
func gateOf(g *cohortv1.GateResult) *gateJSON {
	if g == nil {
		return nil
	}
	out := &gateJSON{Passed: g.GetPassed(), Reasons: append([]string{}, g.GetReasons()...)}
	for _, o := range g.GetOverrides() {
		out.Overrides = append(out.Overrides, overrideJSON{By: o.GetBy(), Reason: o.GetReason(),
			Time: time.Unix(0, o.GetTimeUnixNano()).UTC().Format(time.RFC3339)})
	}
	return out
}

func resultOf(j *cohortv1.Job) jobResult {
	r := jobResult{
		JobID: j.GetId(), Status: stateName(j.GetState()), Metrics: j.GetMetrics(),
		Checkpoint: j.GetCheckpoint(), Exports: j.GetExports(), Report: j.GetReport(), Gate: gateOf(j.GetGate()),
	}
	if r.Metrics == nil {
		r.Metrics = map[string]float64{}
	}
	if r.Exports == nil {
		r.Exports = []string{}
	}
	if e := j.GetExportedFrom(); e != nil {
		step, epoch := e.GetStep(), e.GetEpoch()
		r.ExportedStep, r.ExportedEpoch, r.ExportedCheckpoint = &step, &epoch, e.GetCheckpoint()
	}
	if j.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED || (r.Gate != nil && !r.Gate.Passed) || j.GetEarlyStop() != nil {
		r.Message = j.GetStatusMessage()
	}
	return r
}

// stateName is the lower-case name of a job state ("pending", "succeeded", ...).
func stateName(s cohortv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

func taskStateName(s cohortv1.TaskState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "TASK_STATE_"))
}

func terminal(s cohortv1.JobState) bool {
	switch s {
	case cohortv1.JobState_JOB_STATE_SUCCEEDED, cohortv1.JobState_JOB_STATE_FAILED, cohortv1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// watchUntilDone follows a job until it reaches a terminal state, printing its progress
// to progress (may be nil; a live bar on a terminal, a line per epoch elsewhere), and
// returns the final job. It reconnects when the
// stream breaks.
func watchUntilDone(ctx context.Context, c cohortv1.JobServiceClient, id string, progress io.Writer) (*cohortv1.Job, error) {
	pp := newProgressPrinter(progress)
	backoff := 100 * time.Millisecond
	for {
		stream, err := c.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: id})
		if err != nil {
			return nil, rpcErr("watch job", err)
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if st, ok := status.FromError(err); ok && st.Code() == codes.NotFound {
					return nil, rpcErr("watch job", err)
				}
				break
			}
			j := resp.GetJob()
			if progress != nil {
				pp.update(j)
			}
			if terminal(j.GetState()) {
				return j, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func formatMetrics(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s %.4f", k, m[k])
	}
	return b.String()
}

// connect validates the output flag and dials the coordinators named by --address,
// presenting the client certificate of --tls-dir / COHORT_TLS_DIR / ~/.config/cohort and
// sending the ACL token of --token / COHORT_TOKEN / the config file.
func connect(g *globalFlags) (*grpc.ClientConn, error) {
	if err := checkOutput(g); err != nil {
		return nil, err
	}
	creds, err := clientCredentials(g)
	if err != nil {
		return nil, err
	}
	dialedAddress = g.address
	return dial(g.address, creds, tokenDialOptions(g.token)...)
}

// checkOutput validates the -o flag (table, json or yaml; see normalizeOutput).
func checkOutput(g *globalFlags) error { return normalizeOutput(g) }

var stdout io.Writer = os.Stdout
