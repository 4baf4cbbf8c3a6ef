package metrics

import (
	"math"
	"math/rand/v2"
	"testing"
)

func near(got, want float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(got)
	}
	return math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want))
}

// bruteAUC counts positive-negative pairs, ties counting one half.
func bruteAUC(scores, labels []float32) float64 {
	var wins, pairs float64
	for i := range scores {
		for j := range scores {
			if labels[i] != 1 || labels[j] != 0 {
				continue
			}
			pairs++
			switch {
			case scores[i] > scores[j]:
				wins++
			case scores[i] == scores[j]:
				wins += 0.5
			}
		}
	}
	if pairs == 0 {
		return math.NaN()
	}
	return wins / pairs
}

func TestAUC(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name           string
		scores, labels []float32
		want           float64
	}{
		{"perfect", []float32{0.1, 0.2, 0.8, 0.9}, []float32{0, 0, 1, 1}, 1},
		{"inverted", []float32{0.9, 0.8, 0.2, 0.1}, []float32{0, 0, 1, 1}, 0},
		{"all tied", []float32{0.5, 0.5, 0.5, 0.5}, []float32{0, 1, 0, 1}, 0.5},
		{"one tie across classes", []float32{0.1, 0.4, 0.4, 0.9}, []float32{0, 0, 1, 1}, 0.875},
		{"hand example", []float32{0.1, 0.35, 0.4, 0.8}, []float32{0, 1, 0, 1}, 0.75},
		{"one class", []float32{0.1, 0.2}, []float32{1, 1}, math.NaN()},
		{"empty", nil, nil, math.NaN()},
		{"length mismatch", []float32{0.1, 0.2}, []float32{1}, math.NaN()},
		{"NaN score", []float32{0.1, nan}, []float32{0, 1}, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AUC(tt.scores, tt.labels); !near(got, tt.want) {
				t.Fatalf("AUC = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAUCMatchesPairCounting(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		n := 2 + rng.IntN(60)
		scores, labels := make([]float32, n), make([]float32, n)
		for i := range n {
			// Few distinct scores, so ties are common.
			scores[i] = float32(rng.IntN(1+trial%10)) / 4
			labels[i] = float32(rng.IntN(2))
		}
		if got, want := AUC(scores, labels), bruteAUC(scores, labels); !near(got, want) {
			t.Fatalf("trial %d: AUC = %v, pair counting %v (scores %v labels %v)", trial, got, want, scores, labels)
		}
	}
}

func TestBinaryMetrics(t *testing.T) {
	probs := []float32{0.9, 0.4, 0.6, 0.1, 0}
	labels := []float32{1, 1, 0, 0, 1}
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"accuracy 0.5", Accuracy(probs, labels, 0.5), 2.0 / 5},
		{"accuracy 0.3", Accuracy(probs, labels, 0.3), 3.0 / 5},
		{"accuracy threshold inclusive", Accuracy([]float32{0.5}, []float32{1}, 0.5), 1},
		{"accuracy empty", Accuracy(nil, nil, 0.5), math.NaN()},
		{"logloss", BinaryLogLoss(probs, labels),
			-(math.Log(0.9) + math.Log(float64(float32(0.4))) + math.Log(1-float64(float32(0.6))) + math.Log(1-float64(float32(0.1))) + math.Log(1e-7)) / 5},
		{"logloss clipped at 1", BinaryLogLoss([]float32{1}, []float32{0}), -math.Log(1e-7)},
		{"logloss perfect", BinaryLogLoss([]float32{1, 0}, []float32{1, 0}), -math.Log(1 - 1e-7)},
		{"logloss mismatch", BinaryLogLoss(probs, labels[:2]), math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "logloss" {
				// float32 inputs: compare loosely.
				if math.Abs(tt.got-tt.want) > 1e-6 {
					t.Fatalf("got %v, want %v", tt.got, tt.want)
				}
				return
			}
			if !near(tt.got, tt.want) {
				t.Fatalf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestMulticlassMetrics(t *testing.T) {
	probs := []float32{
		0.7, 0.2, 0.1,
		0.1, 0.3, 0.6,
		0.4, 0.4, 0.2, // tie: first class wins
		0, 1, 0,
	}
	labels := []float32{0, 1, 0, 0}
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"accuracy", MulticlassAccuracy(probs, 3, labels), 2.0 / 4},
		{"cross entropy", CrossEntropy(probs, 3, labels),
			-(math.Log(float64(float32(0.7))) + math.Log(float64(float32(0.3))) + math.Log(float64(float32(0.4))) + math.Log(1e-7)) / 4},
		{"label out of range", MulticlassAccuracy(probs, 3, []float32{0, 1, 3, 0}), math.NaN()},
		{"fractional label", CrossEntropy(probs, 3, []float32{0, 1.5, 2, 0}), math.NaN()},
		{"negative label", CrossEntropy(probs, 3, []float32{0, -1, 2, 0}), math.NaN()},
		{"shape mismatch", MulticlassAccuracy(probs[:11], 3, labels), math.NaN()},
		{"zero classes", CrossEntropy(nil, 0, nil), math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if math.Abs(tt.got-tt.want) > 1e-6 && !(math.IsNaN(tt.got) && math.IsNaN(tt.want)) || math.IsNaN(tt.got) != math.IsNaN(tt.want) {
				t.Fatalf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestRegressionMetrics(t *testing.T) {
	pred := []float32{3, -1, 2, 5}
	target := []float32{2, 1, 0, 4}
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"rmse", RMSE(pred, target), math.Sqrt((1 + 4 + 4 + 1) / 4.0)},
		{"mae", MAE(pred, target), (1 + 2 + 2 + 1) / 4.0},
		{"mape skips zero target", MAPE(pred, target), 100 * (0.5 + 2 + 0.25) / 3},
		{"mape all zero", MAPE([]float32{1}, []float32{0}), math.NaN()},
		{"mape negative target", MAPE([]float32{-3}, []float32{-2}), 50},
		{"rmse empty", RMSE(nil, nil), math.NaN()},
		{"mae mismatch", MAE(pred, target[:1]), math.NaN()},
		{"rmse perfect", RMSE(target, target), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !near(tt.got, tt.want) {
				t.Fatalf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func BenchmarkAUC(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	scores, labels := make([]float32, 10000), make([]float32, 10000)
	for i := range scores {
		scores[i] = rng.Float32()
		labels[i] = float32(rng.IntN(2))
	}
	b.ReportAllocs()
	for b.Loop() {
		AUC(scores, labels)
	}
}
