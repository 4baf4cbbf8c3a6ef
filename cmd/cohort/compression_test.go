package main

import (
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestCompressionKeepsAccuracy trains the attrition example on the embedded cluster (2
// workers, 2 shards, sync, real gRPC with mutual TLS) without compression, with fp16,
// and with top-k 1% plus error feedback. The compressed runs must reach a val_auc
// within 0.03 of the uncompressed run's (which is deterministic in sync mode: 0.806,
// BENCHMARKS.md), and the job's progress must carry bytes per step that show the
// compression: fp16 halves pushes and pulls exactly, top-k sends at most 3% of the
// float32 bytes (8 bytes per value sent, 1% of the values) and pulls float32. The
// node's /metrics count the same traffic.
func TestCompressionKeepsAccuracy(t *testing.T) {
	const slack = 0.03
	base := 0.0
	for _, tc := range []struct{ name, compression string }{
		{"none", ""},
		{"fp16", "\n    compression: {fp16: true}"},
		{"topk", "\n    compression: {topK: 0.01, errorFeedback: true}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := exampleSpec(t, "consistency: {mode: sync}", "consistency: {mode: sync}"+tc.compression)
			job, c := runJob(t, spec, 2, 2)
			if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
			}
			auc := job.GetMetrics()["val_auc"]
			p := job.GetProgress()
			t.Logf("%s: val_auc %.4f; per step sent %.0f of %.0f B, received %.0f of %.0f B", tc.name, auc,
				p.GetPushBytesPerStep(), p.GetPushDenseBytesPerStep(), p.GetPullBytesPerStep(), p.GetPullDenseBytesPerStep())
			if tc.name == "none" {
				base = auc
				if auc < 0.75 {
					t.Fatalf("uncompressed val_auc %.4f below 0.75", auc)
				}
			} else if base == 0 {
				t.Fatal("the uncompressed run did not finish")
			} else if auc < base-slack {
				t.Fatalf("%s: val_auc %.4f, more than %.2f below the uncompressed %.4f", tc.name, auc, slack, base)
			}
			push, pushDense := p.GetPushBytesPerStep(), p.GetPushDenseBytesPerStep()
			pull, pullDense := p.GetPullBytesPerStep(), p.GetPullDenseBytesPerStep()
			if pushDense <= 0 || pullDense <= 0 {
				t.Fatalf("progress has no traffic: %v", p)
			}
			switch tc.name {
			case "none":
				if push != pushDense || pull != pullDense {
					t.Errorf("uncompressed traffic %v: wire and float32 bytes differ", p)
				}
			case "fp16":
				if 2*push != pushDense || 2*pull != pullDense {
					t.Errorf("fp16 traffic %v: not exactly half the float32 bytes", p)
				}
			case "topk":
				if push > 0.03*pushDense || pull != pullDense {
					t.Errorf("top-k traffic %v: pushes over 3%% of float32, or pulls compressed", p)
				}
				sent := scrapeSum(t, c.HTTPAddr, "cohort_worker_tensor_bytes_total", `direction="sent"`, `form="compressed"`)
				dense := scrapeSum(t, c.HTTPAddr, "cohort_worker_tensor_bytes_total", `direction="sent"`, `form="uncompressed"`)
				if sent <= 0 || sent > 0.03*dense {
					t.Errorf("/metrics: %g bytes sent compressed of %g uncompressed", sent, dense)
				}
			}
		})
	}
}

// TestCompressionRelaxedModes trains the attrition example with fp16 in async mode and
// with top-k 1% plus error feedback in bounded mode (where a too-stale push is refused
// and recomputed: its residual must stay as it was). Both must learn as the
// uncompressed relaxed modes do (TestAsyncAndBoundedReachAccuracy's bound) and send
// what the setting says.
func TestCompressionRelaxedModes(t *testing.T) {
	const minAUC = 0.75
	for _, tc := range []struct{ name, consistency string }{
		{"async-fp16", "consistency: {mode: async}\n    compression: {fp16: true}"},
		{"bounded-topk", "consistency: {mode: bounded, staleness: 2}\n    compression: {topK: 0.01, errorFeedback: true}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, _ := runJob(t, exampleSpec(t, "consistency: {mode: sync}", tc.consistency), 2, 2)
			if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
			}
			auc, p := job.GetMetrics()["val_auc"], job.GetProgress()
			t.Logf("%s: val_auc %.4f; per step sent %.0f of %.0f B", tc.name, auc, p.GetPushBytesPerStep(), p.GetPushDenseBytesPerStep())
			if auc < minAUC {
				t.Fatalf("%s: val_auc %.4f below %.2f", tc.name, auc, minAUC)
			}
			if ratio := p.GetPushBytesPerStep() / p.GetPushDenseBytesPerStep(); !(ratio > 0 && ratio <= 0.5) {
				t.Fatalf("%s: pushes at %.3f of their float32 size", tc.name, ratio)
			}
		})
	}
}

// scrapeSum sums the series of metric name on a node's /metrics whose labels include
// every one of labels (each `key="value"`), over their other labels (node, ...).
func scrapeSum(t *testing.T, httpAddr, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	sum, found := 0.0, false
	for _, m := range regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(name)+`\{([^}]*)\} (\S+)$`).FindAllSubmatch(body, -1) {
		all := true
		for _, l := range labels {
			all = all && strings.Contains(","+string(m[1])+",", ","+l+",")
		}
		if !all {
			continue
		}
		v, err := strconv.ParseFloat(string(m[2]), 64)
		if err != nil || math.IsNaN(v) {
			t.Fatalf("%s{%s} = %q", name, m[1], m[2])
		}
		sum, found = sum+v, true
	}
	if !found {
		t.Fatalf("/metrics has no %s with %v:\n%s", name, labels, grepLines(string(body), "tensor_bytes"))
	}
	return sum
}

// TestFormatTraffic is job status's traffic line.
func TestFormatTraffic(t *testing.T) {
	for _, tc := range []struct {
		p    *cohortv1.JobProgress
		want string
	}{
		{&cohortv1.JobProgress{}, ""},
		{&cohortv1.JobProgress{PushBytesPerStep: 20996, PushDenseBytesPerStep: 20996, PullBytesPerStep: 20996, PullDenseBytesPerStep: 20996},
			"sent 20.5 KiB/step, received 20.5 KiB/step"},
		{&cohortv1.JobProgress{PushBytesPerStep: 440, PushDenseBytesPerStep: 20996, PullBytesPerStep: 20996, PullDenseBytesPerStep: 20996},
			"sent 440 B/step (20.5 KiB uncompressed, 47.7x), received 20.5 KiB/step"},
	} {
		if got := formatTraffic(tc.p); got != tc.want {
			t.Errorf("formatTraffic(%v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// TestSoakCompressionFashionCNN trains jobs/examples/fashion-cnn.yaml as it is (2
// workers, 2 shards, 8 epochs) on the embedded cluster with fp16 and with top-k 1%
// plus error feedback: each must reach a test_accuracy of at least 0.89. It takes
// minutes, so it runs with COHORT_CHAOS=1 (make chaos) only; TestCompressionKeepsAccuracy
// is its short form. It needs the data set (make data).
func TestSoakCompressionFashionCNN(t *testing.T) {
	if os.Getenv("COHORT_CHAOS") == "" {
		t.Skip("minutes long: runs with COHORT_CHAOS=1 (make chaos)")
	}
	const dataDir = "/usr/share/datasets/fashion-mnist"
	if _, err := os.Stat(filepath.Join(dataDir, "train-images-idx3-ubyte.gz")); err != nil {
		t.Fatalf("Fashion-MNIST is not installed (make data): %v", err)
	}
	raw, err := os.ReadFile(repoPath(t, "jobs/examples/fashion-cnn.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, compression string }{
		{"fp16", "{fp16: true}"},
		{"topk", "{topK: 0.01, errorFeedback: true}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const old = "consistency: {mode: sync}"
			if !strings.Contains(string(raw), old) {
				t.Fatalf("fashion-cnn.yaml has no %q", old)
			}
			spec := strings.Replace(string(raw), old, old+"\n    compression: "+tc.compression, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
			defer cancel()
			c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t),
				DataRoots: append(nodetest.TestDataRoots(), dataDir)})
			conn, err := dial(c.GRPCAddr, testCreds(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := cohortv1.NewJobServiceClient(conn)
			start := time.Now()
			resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(spec), IdempotencyKey: newIdempotencyKey()})
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			job, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
			}
			m, p := job.GetMetrics(), job.GetProgress()
			t.Logf("%s: test_accuracy %.4f, val_accuracy %.4f after %v; per step sent %.0f of %.0f B, received %.0f of %.0f B",
				tc.name, m["test_accuracy"], m["val_accuracy"], time.Since(start).Round(time.Second),
				p.GetPushBytesPerStep(), p.GetPushDenseBytesPerStep(), p.GetPullBytesPerStep(), p.GetPullDenseBytesPerStep())
			if acc := m["test_accuracy"]; acc < 0.89 {
				t.Fatalf("%s: test_accuracy %.4f below 0.89", tc.name, acc)
			}
		})
	}
}
