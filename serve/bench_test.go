package serve

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"encoding/json"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/model"
)

// exampleFixture serves one of the example models of `cohort bench serve --example`
// (jobs/examples: fashion-cnn, performance-lstm; the same architectures, random
// weights) and returns request inputs of n rows for it: the LSTM's windows from the
// performance sample's columns (cycled, as the bench does), the CNN's random pixels.
func exampleFixture(b *testing.B, name string) (*fixture, func(n int) []input) {
	b.Helper()
	switch name {
	case "fashion-cnn":
		arch := export.Architecture{Kind: export.KindCNN, Task: export.TaskMulticlass, Inputs: 28 * 28, Outputs: 10, Activation: export.ActReLU,
			Channels: 1, Height: 28, Width: 28, Pool: 2, Dense: []int{128},
			Conv: []export.Conv{{Filters: 32, Kernel: 3, Stride: 1}, {Filters: 64, Kernel: 3, Stride: 1}}}
		m, err := model.New(arch, model.Options{BatchSize: 1})
		f := newFixture(b, m, err, arch, "idx", export.ImagePreprocessing{Channels: 1, Height: 28, Width: 28, Scale: 1.0 / 255, Classes: 10, Layout: "NCHW"})
		return f, func(n int) []input {
			rng := rand.New(rand.NewPCG(uint64(n), 1))
			px := make([]float64, n*28*28)
			for i := range px {
				px[i] = float64(rng.IntN(256))
			}
			return []input{{ImageInput, []int{n, 1, 28, 28}, TypeUINT8, px}}
		}
	case "performance-lstm":
		fh, err := os.Open("../jobs/data/performance-sample.csv")
		if err != nil {
			b.Fatal(err)
		}
		defer fh.Close()
		tbl, err := data.ReadCSV(fh)
		if err != nil {
			b.Fatal(err)
		}
		features := []string{"HoursWorked", "OvertimeHours", "ProjectsActive", "TrainingHours", "AbsenceDays", "PeerFeedback", "PerformanceScore"}
		seq, err := data.LoadSequences(tbl, data.SequenceConfig{Lookback: 12, Horizon: 3, Target: "PerformanceScore", Features: features,
			Group: "EmployeeID", Time: "Month", Task: export.TaskRegression, ValidationFraction: 0.2}, "performance-sample.csv")
		if err != nil {
			b.Fatal(err)
		}
		arch := export.Architecture{Kind: export.KindLSTM, Task: export.TaskRegression, Inputs: 12 * len(features), Outputs: 1, Hidden: []int{32},
			Steps: 12, Features: len(features), LabelMean: seq.Scaler.TargetMean, LabelStd: seq.Scaler.TargetStd}
		m, err := model.New(arch, model.Options{BatchSize: 1})
		f := newFixture(b, m, err, arch, "sequence_csv", seq.Scaler)
		return f, func(n int) []input {
			var ins []input
			for j, feat := range features {
				col := tbl.ColumnIndex(feat)
				vals := make([]float64, n*12)
				for i := range vals {
					vals[i], _ = strconv.ParseFloat(strings.TrimSpace(tbl.Rows[(i+j*7919)%len(tbl.Rows)][col]), 64)
				}
				ins = append(ins, input{feat, []int{n, 12}, TypeFP64, vals})
			}
			return ins
		}
	}
	b.Fatalf("no example %s", name)
	return nil, nil
}

// benchInfer measures requests of 1, 64 and 1,024 rows of the example model through
// the HTTP handler (decoding, featurization, the network, encoding), in JSON or with
// the inputs' data in the binary tensor extension (outputs in JSON, as `cohort bench
// serve --binary` sends them).
func benchInfer(b *testing.B, name string, bin bool) {
	f, inputs := exampleFixture(b, name)
	f.srv.cfg.MaxBatchRows = 1 << 16
	f.srv.cfg.MaxRequestBytes = 1 << 30
	for _, n := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			var body []byte
			jsonLen := -1
			if bin {
				body, jsonLen = binaryBody(b, inputs(n), nil, nil)
			} else {
				var err error
				if body, err = json.Marshal(inferReq{Inputs: inputs(n)}); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest("POST", "/v2/models/test-model/infer", bytes.NewReader(body))
				if jsonLen >= 0 {
					req.Header.Set(HeaderInferenceContentLength, strconv.Itoa(jsonLen))
				}
				f.srv.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("%d %.300s", rec.Code, rec.Body)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
			if cpu := processCPU() - cpu0; cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}

func BenchmarkInferJSON(b *testing.B) {
	for _, name := range []string{"performance-lstm", "fashion-cnn"} {
		b.Run(name, func(b *testing.B) { benchInfer(b, name, false) })
	}
}

func BenchmarkInferBinary(b *testing.B) {
	for _, name := range []string{"performance-lstm", "fashion-cnn"} {
		b.Run(name, func(b *testing.B) { benchInfer(b, name, true) })
	}
}

// BenchmarkDecodeRequestJSON measures DecodeRequest alone on the example LSTM's
// 1,024-row JSON request (86,016 decimals) and the CNN's (802,816 pixels).
func BenchmarkDecodeRequestJSON(b *testing.B) {
	for _, name := range []string{"performance-lstm", "fashion-cnn"} {
		b.Run(name, func(b *testing.B) {
			_, inputs := exampleFixture(b, name)
			body, err := json.Marshal(inferReq{Inputs: inputs(1024)})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				if _, _, err := DecodeRequest(body, 1<<30); err != nil {
					b.Fatal(err)
				}
			}
			if cpu := processCPU() - cpu0; cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}
