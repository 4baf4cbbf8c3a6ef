package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/serve"
	"github.com/cohort-dev/cohort/storage"
)

func init() { registerCommand(newServeCmd) }

// serveLog receives the JSON logs of `cohort serve` (tests redirect it).
var serveLog io.Writer = os.Stderr

func newServeCmd(_ *globalFlags) *cobra.Command {
	var (
		model, addr string
		s3          storage.S3Config
		cfg         = serve.DefaultConfig()
	)
	cmd := &cobra.Command{
		Use:   "serve --model DIR|s3://… [--addr A]",
		Short: "Serve an exported model over the Open Inference Protocol (KServe v2 REST)",
		Long: `Serve loads an exported model (a directory or s3:// prefix holding model.safetensors, as
written by "cohort export" or a job's export) and answers:

  GET  /v2/health/live, /v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready
  POST /v2/models/{name}/infer
  GET  /metrics (Prometheus)

An inference request has one input tensor per raw column of the training data, named
as in the data (BYTES for text, FP32/FP64/INT64 for numbers, shape [N]); image models
take "image" [N, C, H, W] pixels 0..255, sequence models one [N, lookback] tensor per
feature. The saved preprocessing is applied and outputs[0] holds one probability
(binary), class probabilities (multiclass) or value (regression) per row.

The network runs on the training kernels. Concurrent small requests (fewer than
--batch-max-rows rows) are batched server-side: a batch takes every queued request
and waits up to --batch-window for requests still being decoded; when --queue
requests are waiting, more get 429 with Retry-After. The KServe v2 binary tensor data
extension is understood (Inference-Header-Content-Length; "binary_data_size" on
inputs, "binary_data": true on outputs).`,
		Example: `  cohort serve --model models/ --addr 127.0.0.1:8080
  cohort serve --model s3://cohort/jobs/attrition-mlp-1a2b3c4d/export/model.safetensors --s3-endpoint http://127.0.0.1:9000`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" {
				return usageErr("--model: a model directory or s3:// URI is required")
			}
			c := storage.DefaultS3Config()
			c.Endpoint, c.Region, c.PathStyle = s3.Endpoint, s3.Region, s3.PathStyle
			m, err := serve.Load(cmd.Context(), model, c)
			if err != nil {
				return usageErr("--model: %v", err)
			}
			logger := slog.New(slog.NewJSONHandler(serveLog, nil))
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			switch b := cfg.Batching; {
			case b.MaxRows <= 0:
				return usageErr("--batch-max-rows %d: want at least 1", b.MaxRows)
			case b.QueueSize <= 0:
				return usageErr("--queue %d: want at least 1", b.QueueSize)
			case b.Window < 0:
				return usageErr("--batch-window %v: want 0 or more", b.Window)
			}
			cfg.Model, cfg.Logger, cfg.Registerer = m, logger, reg
			srv, err := serve.New(cfg)
			if err != nil {
				return usageErr("%v", err)
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return usageErr("--addr %q: %v", addr, err)
			}
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			mux.Handle("/", srv)
			hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
			logger.Info("serving", "model", m.Name(), "addr", "http://"+ln.Addr().String(), "source", model)
			errc := make(chan error, 1)
			go func() { errc <- hs.Serve(ln) }()
			select {
			case err := <-errc:
				return fmt.Errorf("serve: %w", err)
			case <-cmd.Context().Done():
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve: shutdown: %w", err)
			}
			srv.Close()
			logger.Info("stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "export directory, .safetensors file, or file:// / s3:// URI of either")
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "HTTP listen address")
	cmd.Flags().Int64Var(&cfg.MaxRequestBytes, "max-request-bytes", cfg.MaxRequestBytes, "largest request body accepted (larger: 413)")
	cmd.Flags().IntVar(&cfg.MaxBatchRows, "max-batch", cfg.MaxBatchRows, "most rows per request")
	cmd.Flags().BoolVar(&cfg.Batching.Enabled, "batching", cfg.Batching.Enabled, "merge concurrent small infer requests into server-side batches")
	cmd.Flags().DurationVar(&cfg.Batching.Window, "batch-window", cfg.Batching.Window, "longest a batch waits for requests still being decoded (0: take only what is queued)")
	cmd.Flags().IntVar(&cfg.Batching.MaxRows, "batch-max-rows", cfg.Batching.MaxRows, "most rows per server-side batch; requests of this many rows or more run on their own")
	cmd.Flags().IntVar(&cfg.Batching.QueueSize, "queue", cfg.Batching.QueueSize, "most requests waiting for a batch; more get 429 with Retry-After")
	cmd.Flags().StringVar(&s3.Endpoint, "s3-endpoint", "", "S3 endpoint for s3:// models (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
	cmd.Flags().StringVar(&s3.Region, "s3-region", "", "S3 region (default $AWS_REGION)")
	cmd.Flags().BoolVar(&s3.PathStyle, "s3-path-style", true, "path-style S3 requests")
	return cmd
}
