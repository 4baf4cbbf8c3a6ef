package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/node"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/worker"
)

type devFlags struct {
	dataDir  string
	workers  int
	ps       int
	grpcAddr string
	httpAddr string
	run      string
	logLevel string
	s3       s3Flags
	// dataRoots are the directories jobs' file:// data may be read from.
	dataRoots []string
}

func newDevCmd(g *globalFlags) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded cluster in one process (coordinator, parameter servers, workers, local storage)",
		Long: `dev runs a single-voter coordinator, N parameter-server nodes and M worker nodes in one
process, all talking real gRPC over loopback, with a local storage directory. Every
connection is mutual TLS, as in a real cluster: the cluster CA and the operator's client
credentials live in DATA_DIR/tls (kept across runs); dev prints the line that points the
CLI at them (export COHORT_TLS_DIR=...).

Without --run it serves until interrupted (submit jobs with 'cohort job submit').
With --run FILE it runs that one job to the end, prints per-epoch progress on stderr and
the result object as the last line on stdout, and exits 0 only if the job succeeded.`,
		Example: `  cohort dev --run jobs/examples/attrition-mlp.yaml -o json
  cohort dev --workers 4 --ps 2 --data-dir ./cohort-data`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), g, f) },
	}
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "cohort-data", "directory for storage (checkpoints, exports), coordinator state and the cluster CA (tls/)")
	cmd.Flags().IntVar(&f.workers, "workers", 2, "number of worker nodes")
	cmd.Flags().IntVar(&f.ps, "ps", 2, "number of parameter-server nodes")
	cmd.Flags().StringVar(&f.grpcAddr, "grpc-addr", "", "coordinator gRPC address (default 127.0.0.1:7070; with --run a free loopback port)")
	cmd.Flags().StringVar(&f.httpAddr, "http-addr", "", "HTTP address for /metrics and /healthz (default 127.0.0.1:7071; with --run a free loopback port)")
	cmd.Flags().StringVar(&f.run, "run", "", "run this job spec to the end, then exit")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "", "debug|info|warn|error (default warn with --run, info otherwise)")
	cmd.Flags().StringArrayVar(&f.dataRoots, "data-root", nil, "directory jobs' file:// data may be read from (repeatable; default: the working directory); anything outside is refused")
	f.s3.register(cmd)
	return cmd
}

func runDev(ctx context.Context, g *globalFlags, f *devFlags) error {
	if err := checkOutput(g); err != nil {
		return err
	}
	if f.workers < 1 || f.workers > 64 {
		return usageErr("--workers: must be between 1 and 64, got %d", f.workers)
	}
	if f.ps < 1 || f.ps > 64 {
		return usageErr("--ps: must be between 1 and 64, got %d", f.ps)
	}
	level := f.logLevel
	if level == "" {
		level = "info"
		if f.run != "" {
			level = "warn"
		}
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return usageErr("--log-level: %q is not one of debug, info, warn, error", level)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	slog.SetDefault(logger)

	s3cfg, err := f.s3.config(true)
	if err != nil {
		return err
	}
	var raw []byte
	runSearch := f.run != "" && isSearchFile(f.run)
	if f.run != "" {
		var spec *jobs.TrainingJob
		var err error
		if runSearch {
			raw, spec, err = readSearchRun(f.run)
		} else {
			raw, spec, err = readSpec(f.run)
		}
		if err != nil {
			return err
		}
		if err := checkLocalInputs(spec); err != nil {
			return err
		}
		if err := worker.PreflightWithRoots(ctx, spec, s3cfg, f.dataRoots); err != nil {
			return usageErr("job spec %s: %v", f.run, err)
		}
	}
	cfg := node.DevConfig(f.workers, f.ps, f.dataDir)
	cfg.Logger, cfg.Storage.S3 = logger, s3cfg
	for i := range cfg.Workers {
		cfg.Workers[i].DataRoots = f.dataRoots
	}
	cfg.Coordinator.GRPCAddr = cmp.Or(f.grpcAddr, cfg.Coordinator.GRPCAddr)
	cfg.HTTPAddr = cmp.Or(f.httpAddr, cfg.HTTPAddr)
	if f.run != "" { // one job: state in a temporary directory, free loopback ports
		cfg.Coordinator.DataDir, cfg.Coordinator.Ephemeral = f.dataDir, true
		cfg.Coordinator.GRPCAddr = cmp.Or(f.grpcAddr, "127.0.0.1:0")
		cfg.HTTPAddr = cmp.Or(f.httpAddr, "127.0.0.1:0")
	}
	n, err := startNode(ctx, cfg, devFlagOf)
	if err != nil {
		return err
	}
	defer func() { _ = n.Shutdown(context.Background()) }()
	if err := n.WaitReady(ctx); err != nil {
		return err
	}
	if f.run == "" {
		storageIn := cfg.Storage.Dir
		if s3cfg != nil {
			storageIn = n.Store().URI("")
		}
		fmt.Fprintf(os.Stderr, "cohort dev: coordinator on %s, dashboard on http://%s/ (metrics at /metrics), storage in %s; Ctrl-C to stop\n",
			n.GRPCAddr(), n.HTTPAddr(), storageIn)
		printClientCredentials(n)
		<-ctx.Done()
		return nil
	}
	creds, err := node.ClientTLSCredentials(n.ClientTLSDir())
	if err != nil {
		return err
	}
	conn, err := dial(n.GRPCAddr(), creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	if runSearch {
		return submitSearch(ctx, cohortv1.NewSearchServiceClient(conn), raw, true, false, g.output)
	}
	return submitAndReport(ctx, cohortv1.NewJobServiceClient(conn), raw, true, g.output)
}

// devFlagOf names the dev flag that sets a node.Config field.
var devFlagOf = map[string]string{
	"Coordinator.GRPCAddr": "--grpc-addr", "HTTPAddr": "--http-addr", "Coordinator.DataDir": "--data-dir",
	"Storage.Dir": "--data-dir", "Storage.S3": "--s3-endpoint/--s3-bucket", "TLS.Dir": "--data-dir",
}

// checkLocalInputs makes sure the spec's local file:// inputs exist before a job is
// submitted by `dev --run`.
func checkLocalInputs(spec *jobs.TrainingJob) error {
	d := spec.Spec.Data
	var problems []string
	for _, in := range []struct{ field, uri string }{
		{"spec.data.train", d.Train}, {"spec.data.validation.uri", d.Validation.URI}, {"spec.data.test", d.Test},
	} {
		if in.uri == "" {
			continue
		}
		scheme, _, path, err := jobs.ParseURI(in.uri)
		if err != nil || scheme != "file" {
			continue
		}
		if st, err := os.Stat(path); err != nil {
			problems = append(problems, fmt.Sprintf("%s: file %s does not exist or cannot be read", in.field, path))
		} else if st.IsDir() {
			problems = append(problems, fmt.Sprintf("%s: %s is a directory, not a file", in.field, path))
		}
	}
	if len(problems) > 0 {
		return usageErr("%s", strings.Join(problems, "\n"))
	}
	return nil
}
