package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/coordinator/search"
	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func init() { registerCommand(newSearchCmd) }

func newSearchCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "search", Short: "Run hyperparameter searches (kind: Search): ASHA, random or grid"}
	cmd.AddCommand(newSearchSubmitCmd(g), newSearchStatusCmd(g), newSearchListCmd(g), newSearchCancelCmd(g), newSearchExportBestCmd(g))
	return cmd
}

// readSearchSpec reads a Search spec file, inlines its templateFile (relative to the
// file) and validates it; problems are bad input (exit 2). It returns the spec to
// submit and its expansion.
func readSearchSpec(path string) ([]byte, *jobs.SearchPlan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, usageErr("search spec: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, jobs.MaxSpecBytes+1))
	if err != nil {
		return nil, nil, usageErr("search spec %s: %v", path, err)
	}
	if len(b) > jobs.MaxSpecBytes {
		return nil, nil, usageErr("search spec %s: larger than %d bytes", path, jobs.MaxSpecBytes)
	}
	b, err = jobs.ResolveSearchTemplateFile(b, filepath.Dir(path))
	if err != nil {
		return nil, nil, usageErr("search spec %s is invalid:\n%v", path, err)
	}
	plan, err := jobs.ExpandSearch(b)
	if err != nil {
		return nil, nil, usageErr("search spec %s is invalid:\n%v", path, err)
	}
	return b, plan, nil
}

// readSearchRun is readSearchSpec for `dev --run`: it returns the first trial's
// TrainingJob too, whose local inputs dev checks (every trial reads the same data).
func readSearchRun(path string) ([]byte, *jobs.TrainingJob, error) {
	raw, plan, err := readSearchSpec(path)
	if err != nil {
		return nil, nil, err
	}
	spec, err := jobs.Parse(plan.Trials[0].Spec)
	if err != nil {
		return nil, nil, usageErr("search spec %s: trial 0: %v", path, err)
	}
	return raw, spec, nil
}

// isSearchFile reports whether the spec file at path declares kind: Search.
func isSearchFile(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && len(b) <= jobs.MaxSpecBytes && jobs.IsSearchSpec(b)
}

// searchCall dials, makes one SearchService call and maps its error.
func searchCall[Req, Resp any](ctx context.Context, g *globalFlags, what string,
	rpc func(cohortv1.SearchServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var zero Resp
	conn, err := connect(g)
	if err != nil {
		return zero, err
	}
	defer conn.Close()
	resp, err := rpc(cohortv1.NewSearchServiceClient(conn), ctx, req)
	if err != nil {
		return zero, rpcErr(what, err)
	}
	return resp, nil
}

func newSearchSubmitCmd(g *globalFlags) *cobra.Command {
	var wait, waitForCapacity bool
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "Submit a Search spec",
		Long: `Submit a Search spec: its trials (TrainingJobs built from spec.template with the
parameters drawn from spec.seed) run as ordinary jobs, parallelTrials at a time. With
--wait it follows the search to the end, prints its result object (-o json: one line
{"search_id", "status", "trials", "best": {"job_id", "parameters", "metrics"},
"exports"}) and exits 0 only if it succeeded.`,
		Example: `  cohort search submit jobs/examples/search/attrition-search.yaml
  cohort search submit jobs/examples/search/attrition-search.yaml --wait -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			raw, _, err := readSearchSpec(args[0])
			if err != nil {
				return err
			}
			conn, err := connect(g)
			if err != nil {
				return err
			}
			defer conn.Close()
			return submitSearch(cmd.Context(), cohortv1.NewSearchServiceClient(conn), raw, wait, waitForCapacity, g.output)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the search to end; exit 0 only if it succeeded")
	cmd.Flags().BoolVar(&waitForCapacity, "wait-for-capacity", false,
		"accept trials larger than the registered nodes (they wait for more nodes) instead of refusing them")
	return cmd
}

// submitSearch submits a Search spec (retrying with one idempotency key while the
// coordinator is unavailable) and, with wait, follows it and reports its result.
func submitSearch(ctx context.Context, c cohortv1.SearchServiceClient, raw []byte, wait, waitForCapacity bool, output string) error {
	resp, err := submitRetrying(ctx, "submit search", func(ctx context.Context, key string) (*cohortv1.SubmitSearchResponse, error) {
		return c.SubmitSearch(ctx, &cohortv1.SubmitSearchRequest{SpecYaml: raw, IdempotencyKey: key, WaitForCapacity: waitForCapacity})
	})
	if err != nil {
		return err
	}
	sr := resp.GetSearch()
	if !wait {
		if output == "json" {
			return printJSON(stdout, map[string]any{"search_id": sr.GetId(), "status": search.StateWord(sr.GetState()), "trials": len(sr.GetTrials())})
		}
		fmt.Fprintf(stdout, "submitted search %s (%d trials, %s)\n", sr.GetId(), len(sr.GetTrials()), sr.GetAlgorithm())
		return nil
	}
	fmt.Fprintf(os.Stderr, "submitted search %s (%d trials, %s)\n", sr.GetId(), len(sr.GetTrials()), sr.GetAlgorithm())
	final, err := watchSearch(ctx, c, sr.GetId(), os.Stderr)
	if err != nil {
		return err
	}
	return reportSearch(final, output, true)
}

// watchSearch polls a search until it ends, writing a line to progress for every
// change of a trial's status or rung decisions.
func watchSearch(ctx context.Context, c cohortv1.SearchServiceClient, id string, progress io.Writer) (*cohortv1.GetSearchResponse, error) {
	seen := map[string]string{}
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := c.GetSearch(cctx, &cohortv1.GetSearchRequest{Id: id})
		cancel()
		if err != nil {
			cerr := rpcErr("get search", err)
			var ee *exitError
			if errors.As(cerr, &ee) || ctx.Err() != nil {
				return nil, cerr
			}
		} else {
			res := searchResultOf(resp)
			for _, t := range res.Trials {
				line := fmt.Sprintf("trial %d %s", t.Index, t.Status)
				if t.Objective != nil {
					line += fmt.Sprintf(" %s=%.4f", res.Metric, *t.Objective)
				}
				if n := len(t.Rungs); n > 0 {
					line += fmt.Sprintf(" (rung %d: %s)", t.Rungs[n-1].Rung, t.Rungs[n-1].Reason)
				}
				key := fmt.Sprintf("%d", t.Index)
				if t.Status != "waiting" && seen[key] != line && progress != nil {
					fmt.Fprintln(progress, line)
				}
				seen[key] = line
			}
			if resp.GetSearch().GetState() != cohortv1.SearchState_SEARCH_STATE_RUNNING {
				return resp, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// searchResult is the result object of `search submit --wait`, `search status` and
// `dev --run` of a Search.
type searchResult struct {
	SearchID  string        `json:"search_id"`
	Status    string        `json:"status"`
	Message   string        `json:"message,omitempty"`
	Algorithm string        `json:"algorithm"`
	Metric    string        `json:"metric"`
	Mode      string        `json:"mode"`
	Trials    []trialResult `json:"trials"`
	Best      *bestResult   `json:"best"`
	Exports   []string      `json:"exports"`
	// WallSeconds is the time from submission to the end (or to now).
	WallSeconds float64 `json:"wall_seconds"`
}

// bestResult is the best trial.
type bestResult struct {
	JobID      string                     `json:"job_id"`
	Trial      int                        `json:"trial"`
	Parameters map[string]json.RawMessage `json:"parameters"`
	Metrics    map[string]float64         `json:"metrics"`
}

// trialResult is one trial.
type trialResult struct {
	Index      int                        `json:"index"`
	JobID      string                     `json:"job_id"`
	Status     string                     `json:"status"`
	Message    string                     `json:"message,omitempty"`
	Parameters map[string]json.RawMessage `json:"parameters"`
	// Epochs is the number of epochs the trial reported; Objective its value of the
	// search's metric (the exported checkpoint's when the job succeeded, else its best
	// epoch's); absent before its first epoch.
	Epochs    int          `json:"epochs"`
	Objective *float64     `json:"objective"`
	Rungs     []rungResult `json:"rungs,omitempty"`
}

type rungResult struct {
	Rung     int     `json:"rung"`
	Epoch    int     `json:"epoch"`
	Value    float64 `json:"value"`
	Promoted bool    `json:"promoted"`
	Reason   string  `json:"reason"`
}

func paramsJSON(p map[string]string) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(p))
	for k, v := range p {
		if json.Valid([]byte(v)) {
			out[k] = json.RawMessage(v)
		} else {
			b, _ := json.Marshal(v)
			out[k] = b
		}
	}
	return out
}

func searchResultOf(resp *cohortv1.GetSearchResponse) searchResult {
	sr := resp.GetSearch()
	jobs := map[string]*cohortv1.Job{}
	for _, j := range resp.GetJobs() {
		jobs[j.GetId()] = j
	}
	mode := "min"
	if sr.GetMaximize() {
		mode = "max"
	}
	res := searchResult{
		SearchID: sr.GetId(), Status: search.StateWord(sr.GetState()), Message: sr.GetStatusMessage(),
		Algorithm: sr.GetAlgorithm(), Metric: sr.GetMetric(), Mode: mode, Trials: []trialResult{}, Exports: []string{},
	}
	end := time.Now()
	if sr.GetEndTimeUnixNano() > 0 {
		end = time.Unix(0, sr.GetEndTimeUnixNano())
	}
	res.WallSeconds = math.Round(end.Sub(time.Unix(0, sr.GetSubmitTimeUnixNano())).Seconds()*10) / 10
	for _, t := range sr.GetTrials() {
		job := jobs[t.GetJob().GetId()]
		tr := trialResult{Index: int(t.GetIndex()), JobID: t.GetJob().GetId(), Status: search.TrialStatus(t, job),
			Parameters: paramsJSON(t.GetParameters()), Epochs: len(t.GetEpochs())}
		if job != nil && state(job) != "succeeded" && state(job) != "running" && state(job) != "pending" {
			tr.Message = job.GetStatusMessage()
		}
		if v, _, ok := search.TrialValue(sr, t, job); ok {
			tr.Objective = &v
		}
		for _, d := range t.GetDecisions() {
			tr.Rungs = append(tr.Rungs, rungResult{Rung: int(d.GetRung()), Epoch: int(d.GetEpoch()), Value: nanToZero(d.GetValue()),
				Promoted: d.GetPromoted(), Reason: d.GetReason()})
		}
		res.Trials = append(res.Trials, tr)
	}
	best := int(resp.GetBestTrial())
	if id := sr.GetBestJobId(); id != "" {
		best = slices.IndexFunc(sr.GetTrials(), func(t *cohortv1.SearchTrial) bool { return t.GetJob().GetId() == id })
	}
	if best >= 0 && best < len(sr.GetTrials()) {
		t := sr.GetTrials()[best]
		b := &bestResult{JobID: t.GetJob().GetId(), Trial: best, Parameters: paramsJSON(t.GetParameters()), Metrics: map[string]float64{}}
		if job := jobs[b.JobID]; job != nil {
			if job.GetState() == cohortv1.JobState_JOB_STATE_SUCCEEDED {
				b.Metrics = job.GetMetrics()
				res.Exports = append(res.Exports, job.GetExports()...)
			} else if n := len(t.GetEpochs()); n > 0 {
				b.Metrics = t.GetEpochs()[n-1].GetMetrics()
			}
		}
		res.Best = b
	}
	return res
}

func state(j *cohortv1.Job) string { return stateName(j.GetState()) }

func nanToZero(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// reportSearch prints a search's result; with exitByOutcome a search that did not
// succeed exits 1.
func reportSearch(resp *cohortv1.GetSearchResponse, output string, exitByOutcome bool) error {
	res := searchResultOf(resp)
	if output == "json" {
		if err := printJSON(stdout, res); err != nil {
			return err
		}
	} else {
		printSearchText(stdout, res)
	}
	if exitByOutcome && res.Status != "succeeded" {
		if output == "json" {
			return &exitError{code: 1, err: errSilentFailure}
		}
		return &exitError{code: 1, err: fmt.Errorf("search %s %s: %s", res.SearchID, res.Status, res.Message)}
	}
	return nil
}

func printSearchText(w io.Writer, res searchResult) {
	fmt.Fprintf(w, "search %s %s (%s, %s %s, %.0fs)\n", res.SearchID, res.Status, res.Algorithm, res.Mode, res.Metric, res.WallSeconds)
	if res.Message != "" {
		fmt.Fprintf(w, "  message: %s\n", res.Message)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "TRIAL\tJOB\tSTATUS\tEPOCHS\t%s\tPARAMETERS\n", strings.ToUpper(res.Metric))
	for _, t := range res.Trials {
		obj := "-"
		if t.Objective != nil {
			obj = fmt.Sprintf("%.4f", *t.Objective)
		}
		mark := ""
		if res.Best != nil && res.Best.Trial == t.Index {
			mark = " BEST"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s%s\t%d\t%s\t%s\n", t.Index, t.JobID, t.Status, mark, t.Epochs, obj, paramText(t.Parameters))
	}
	_ = tw.Flush()
	if res.Best != nil {
		fmt.Fprintf(w, "best: trial %d (job %s) %s %s\n", res.Best.Trial, res.Best.JobID, paramText(res.Best.Parameters), formatMetrics(res.Best.Metrics))
	}
	for _, e := range res.Exports {
		fmt.Fprintf(w, "  export: %s\n", e)
	}
}

func paramText(p map[string]json.RawMessage) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + string(p[k])
	}
	return strings.Join(parts, " ")
}

func newSearchStatusCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status SEARCH_ID",
		Short: "Show a search: its trials, their rung decisions and the best so far",
		Example: `  cohort search status attrition-search-1a2b3c4d
  cohort search status attrition-search-1a2b3c4d -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			resp, err := searchCall(cmd.Context(), g, "get search", cohortv1.SearchServiceClient.GetSearch, &cohortv1.GetSearchRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return reportSearch(resp, g.output, false)
		},
	}
}

func newSearchListCmd(g *globalFlags) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List searches",
		Example: `  cohort search list
  cohort search list --namespace default -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			resp, err := searchCall(cmd.Context(), g, "list searches", cohortv1.SearchServiceClient.ListSearches, &cohortv1.ListSearchesRequest{Namespace: namespace})
			if err != nil {
				return err
			}
			type row struct {
				SearchID  string `json:"search_id"`
				Namespace string `json:"namespace"`
				Status    string `json:"status"`
				Algorithm string `json:"algorithm"`
				Trials    int    `json:"trials"`
				Started   int    `json:"started"`
				Message   string `json:"message,omitempty"`
			}
			rows := []row{}
			for _, s := range resp.GetSearches() {
				started := 0
				for _, t := range s.GetTrials() {
					if t.GetStarted() {
						started++
					}
				}
				rows = append(rows, row{s.GetId(), s.GetNamespace(), search.StateWord(s.GetState()), s.GetAlgorithm(), len(s.GetTrials()), started, s.GetStatusMessage()})
			}
			if g.output == "json" {
				return printJSON(stdout, rows)
			}
			tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEARCH\tNAMESPACE\tSTATUS\tALGORITHM\tTRIALS\tMESSAGE")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\n", r.SearchID, r.Namespace, r.Status, r.Algorithm, r.Started, r.Trials, r.Message)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only this namespace (default: all you may read)")
	return cmd
}

func newSearchCancelCmd(g *globalFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:     "cancel SEARCH_ID",
		Short:   "Cancel a search and its unfinished trials",
		Example: `  cohort search cancel attrition-search-1a2b3c4d --reason "enough trials"`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			resp, err := searchCall(cmd.Context(), g, "cancel search", cohortv1.SearchServiceClient.CancelSearch,
				&cohortv1.CancelSearchRequest{Id: args[0], Reason: reason})
			if err != nil {
				return err
			}
			sr := resp.GetSearch()
			if g.output == "json" {
				return printJSON(stdout, map[string]any{"search_id": sr.GetId(), "status": search.StateWord(sr.GetState()), "message": sr.GetStatusMessage()})
			}
			fmt.Fprintf(stdout, "search %s %s\n", sr.GetId(), search.StateWord(sr.GetState()))
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the status)")
	return cmd
}

func newSearchExportBestCmd(g *globalFlags) *cobra.Command {
	var format, out, which, s3Endpoint, s3Region string
	cmd := &cobra.Command{
		Use:   "export-best SEARCH_ID --format onnx|safetensors --out DIR [--checkpoint best|latest|STEP]",
		Short: "Export the best trial's model (as cohort export does for its job)",
		Long: `Export the model of the search's best trial: among the trials whose job succeeded, the
one with the best objective (the metric of the checkpoint it exported). The flags are
those of 'cohort export'.`,
		Example: `  cohort search export-best attrition-search-1a2b3c4d --format onnx --out models/`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := searchCall(cmd.Context(), g, "get search", cohortv1.SearchServiceClient.GetSearch, &cohortv1.GetSearchRequest{Id: args[0]})
			if err != nil {
				return err
			}
			res := searchResultOf(resp)
			if res.Best == nil {
				return usageErr("search %s has no trial with a result yet", args[0])
			}
			best := res.Trials[res.Best.Trial]
			if best.Status != "succeeded" {
				return usageErr("search %s: its best trial so far (%d, job %s) is %s; export-best exports a succeeded trial", args[0], best.Index, best.JobID, best.Status)
			}
			fmt.Fprintf(os.Stderr, "best trial %d: job %s %s\n", best.Index, best.JobID, paramText(best.Parameters))
			pass := []string{best.JobID, "--format", format, "--out", out}
			if cmd.Flags().Changed("checkpoint") {
				pass = append(pass, "--checkpoint", which)
			}
			if s3Endpoint != "" {
				pass = append(pass, "--s3-endpoint", s3Endpoint)
			}
			if s3Region != "" {
				pass = append(pass, "--s3-region", s3Region)
			}
			exp := newExportCmd(g)
			exp.SilenceUsage, exp.SilenceErrors = true, true
			exp.SetArgs(pass)
			return exp.ExecuteContext(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "export format: onnx (Triton repository + safetensors) or safetensors")
	cmd.Flags().StringVar(&out, "out", "", "output directory (created when missing)")
	cmd.Flags().StringVar(&which, "checkpoint", "best", "which checkpoint of the best trial: best, latest, or a step number")
	cmd.Flags().StringVar(&s3Endpoint, "s3-endpoint", "", "S3 endpoint for s3:// checkpoints")
	cmd.Flags().StringVar(&s3Region, "s3-region", "", "S3 region (default $AWS_REGION)")
	return cmd
}
