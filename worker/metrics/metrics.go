// Package metrics computes evaluation metrics of predictions against labels. The
// functions are pure and allocation-light. They return NaN where a metric is undefined:
// no rows, slices whose lengths do not fit together, a label outside its range, or
// (for AUC) a single class.
package metrics

import (
	"fmt"
	"math"
	"slices"
)

// LogLossEpsilon is where BinaryLogLoss and CrossEntropy clip probabilities, so that a
// confident wrong prediction costs -log(1e-7) ≈ 16.1 instead of +Inf.
const LogLossEpsilon = 1e-7

// isPositive reports whether a binary label is the positive class (labels are 0 or 1).
func isPositive(label float32) bool { return label > 0.5 }

// AUC returns the area under the ROC curve of scores against binary labels (1 positive,
// 0 negative): the probability that a random positive scores above a random negative,
// ties counting one half (average ranks). It returns NaN when only one class is present,
// the lengths differ, or a score is NaN.
func AUC(scores []float32, labels []float32) float64 {
	n := len(scores)
	if n != len(labels) || n == 0 {
		return math.NaN()
	}
	idx := make([]int32, n)
	for i := range idx {
		if math.IsNaN(float64(scores[i])) {
			return math.NaN()
		}
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		switch sa, sb := scores[a], scores[b]; {
		case sa < sb:
			return -1
		case sa > sb:
			return 1
		}
		return 0
	})
	var pos, rankSum float64
	for lo := 0; lo < n; {
		hi := lo + 1
		for hi < n && scores[idx[hi]] == scores[idx[lo]] {
			hi++
		}
		// Ranks lo+1..hi (1-based) share their average.
		avg := float64(lo+1+hi) / 2
		for _, i := range idx[lo:hi] {
			if isPositive(labels[i]) {
				pos++
				rankSum += avg
			}
		}
		lo = hi
	}
	neg := float64(n) - pos
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

// Accuracy returns the fraction of rows whose prediction (probs >= threshold) matches
// the binary label.
func Accuracy(probs []float32, labels []float32, threshold float32) float64 {
	if len(probs) != len(labels) || len(probs) == 0 {
		return math.NaN()
	}
	correct := 0
	for i, p := range probs {
		if (p >= threshold) == isPositive(labels[i]) {
			correct++
		}
	}
	return float64(correct) / float64(len(probs))
}

// clip keeps p in [LogLossEpsilon, 1-LogLossEpsilon].
func clip(p float64) float64 {
	return math.Min(math.Max(p, LogLossEpsilon), 1-LogLossEpsilon)
}

// BinaryLogLoss returns the mean binary cross-entropy of the positive-class
// probabilities, clipped at LogLossEpsilon.
func BinaryLogLoss(probs []float32, labels []float32) float64 {
	if len(probs) != len(labels) || len(probs) == 0 {
		return math.NaN()
	}
	var sum float64
	for i, p := range probs {
		q := clip(float64(p))
		if isPositive(labels[i]) {
			sum -= math.Log(q)
		} else {
			sum -= math.Log(1 - q)
		}
	}
	return sum / float64(len(probs))
}

// rows checks a row-major probability matrix against class-index labels and returns
// the row count, or -1 when they do not fit.
func rows(probs []float32, numClasses int, labels []float32) int {
	if numClasses < 1 || len(labels) == 0 || len(probs) != len(labels)*numClasses {
		return -1
	}
	for _, l := range labels {
		if l < 0 || int(l) >= numClasses || float32(int(l)) != l {
			return -1
		}
	}
	return len(labels)
}

// MulticlassAccuracy returns the fraction of rows whose most probable class (the first
// on ties) is the label. probs holds len(labels) rows of numClasses probabilities,
// row-major; labels are class indices.
func MulticlassAccuracy(probs []float32, numClasses int, labels []float32) float64 {
	n := rows(probs, numClasses, labels)
	if n < 0 {
		return math.NaN()
	}
	correct := 0
	for i := range n {
		row := probs[i*numClasses : (i+1)*numClasses]
		best := 0
		for c, p := range row {
			if p > row[best] {
				best = c
			}
		}
		if best == int(labels[i]) {
			correct++
		}
	}
	return float64(correct) / float64(n)
}

// CrossEntropy returns the mean negative log-probability of each row's label class,
// clipped at LogLossEpsilon. probs is row-major as in MulticlassAccuracy.
func CrossEntropy(probs []float32, numClasses int, labels []float32) float64 {
	n := rows(probs, numClasses, labels)
	if n < 0 {
		return math.NaN()
	}
	var sum float64
	for i := range n {
		sum -= math.Log(clip(float64(probs[i*numClasses+int(labels[i])])))
	}
	return sum / float64(n)
}

// RMSE returns the root mean squared error of pred against target.
func RMSE(pred, target []float32) float64 {
	if len(pred) != len(target) || len(pred) == 0 {
		return math.NaN()
	}
	var sum float64
	for i, p := range pred {
		d := float64(p) - float64(target[i])
		sum += d * d
	}
	return math.Sqrt(sum / float64(len(pred)))
}

// MAE returns the mean absolute error of pred against target.
func MAE(pred, target []float32) float64 {
	if len(pred) != len(target) || len(pred) == 0 {
		return math.NaN()
	}
	var sum float64
	for i, p := range pred {
		sum += math.Abs(float64(p) - float64(target[i]))
	}
	return sum / float64(len(pred))
}

// MAPE returns the mean absolute percentage error, 100·mean(|pred-target|/|target|),
// over the rows whose target is not zero; NaN when every target is zero.
func MAPE(pred, target []float32) float64 {
	if len(pred) != len(target) {
		return math.NaN()
	}
	var sum float64
	n := 0
	for i, p := range pred {
		t := float64(target[i])
		if t == 0 {
			continue
		}
		sum += math.Abs((float64(p) - t) / t)
		n++
	}
	if n == 0 {
		return math.NaN()
	}
	return 100 * sum / float64(n)
}

// MAPEExcluded returns MAPE and the number of rows it left out because their target is
// zero (the percentage error of a zero target is undefined).
func MAPEExcluded(pred, target []float32) (mape float64, excluded int) {
	for _, t := range target {
		if t == 0 {
			excluded++
		}
	}
	return MAPE(pred, target), excluded
}

// R2 returns the coefficient of determination 1 - SS_res/SS_tot of pred against target
// (sklearn's r2_score). It is NaN when there are no rows or the target is constant
// (SS_tot = 0), where sklearn returns 1 or 0 by convention rather than a measure.
func R2(pred, target []float32) float64 {
	if len(pred) != len(target) || len(pred) == 0 {
		return math.NaN()
	}
	var mean float64
	for _, t := range target {
		mean += float64(t)
	}
	mean /= float64(len(target))
	var res, tot float64
	for i, p := range pred {
		d := float64(p) - float64(target[i])
		res += d * d
		e := float64(target[i]) - mean
		tot += e * e
	}
	if tot == 0 {
		return math.NaN()
	}
	return 1 - res/tot
}

// Confusion counts the rows of a binary task by prediction (probs >= threshold is
// positive) and label.
type Confusion struct {
	TP, FP, TN, FN int
}

// ConfusionAt counts probs against binary labels at threshold.
func ConfusionAt(probs []float32, labels []float32, threshold float64) Confusion {
	var c Confusion
	for i, p := range probs {
		pos := float64(p) >= threshold
		switch {
		case pos && isPositive(labels[i]):
			c.TP++
		case pos:
			c.FP++
		case isPositive(labels[i]):
			c.FN++
		default:
			c.TN++
		}
	}
	return c
}

// Precision is TP/(TP+FP); NaN when nothing is predicted positive.
func (c Confusion) Precision() float64 { return ratio(c.TP, c.TP+c.FP) }

// Recall is TP/(TP+FN); NaN without positive rows.
func (c Confusion) Recall() float64 { return ratio(c.TP, c.TP+c.FN) }

// F1 is the harmonic mean of precision and recall, 2TP/(2TP+FP+FN); NaN when there are
// neither positive rows nor positive predictions. (sklearn's f1_score returns 0 there,
// with a warning.)
func (c Confusion) F1() float64 { return ratio(2*c.TP, 2*c.TP+c.FP+c.FN) }

func ratio(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// Threshold objectives for FitThreshold.
const (
	// ObjectiveF1 maximises F1.
	ObjectiveF1 = "f1"
	// ObjectiveYouden maximises Youden's J = TPR - FPR (the ROC point farthest above the
	// diagonal).
	ObjectiveYouden = "youden"
	// ObjectivePrecisionAtRecall maximises precision among the thresholds whose recall
	// is at least the target.
	ObjectivePrecisionAtRecall = "precisionAtRecall"
)

// FitThreshold returns the decision threshold on the positive-class probability that
// maximises the objective over the rows, and the objective's value there. The candidates
// are the distinct scores (a row is positive when its score is >= the threshold), as
// sklearn's precision_recall_curve and roc_curve take them; ties in the objective go to
// the highest threshold. minRecall is the target of ObjectivePrecisionAtRecall. It
// returns an error when the rows hold a single class or no candidate reaches minRecall.
func FitThreshold(probs []float32, labels []float32, objective string, minRecall float64) (threshold, value float64, err error) {
	if len(probs) != len(labels) || len(probs) == 0 {
		return 0, 0, fmt.Errorf("metrics: %d scores for %d labels", len(probs), len(labels))
	}
	idx := make([]int, len(probs))
	var pos, neg int
	for i := range idx {
		idx[i] = i
		if math.IsNaN(float64(probs[i])) {
			return 0, 0, fmt.Errorf("metrics: score %d is NaN", i)
		}
		if isPositive(labels[i]) {
			pos++
		} else {
			neg++
		}
	}
	if pos == 0 || neg == 0 {
		return 0, 0, fmt.Errorf("metrics: the rows hold one class only (%d positive, %d negative)", pos, neg)
	}
	// Descending scores: lowering the threshold past each distinct score adds its rows.
	slices.SortFunc(idx, func(a, b int) int { return cmpDesc(probs[a], probs[b]) })
	best, found := math.Inf(-1), false
	var tp, fp int
	for lo := 0; lo < len(idx); {
		hi := lo
		for hi < len(idx) && probs[idx[hi]] == probs[idx[lo]] {
			if isPositive(labels[idx[hi]]) {
				tp++
			} else {
				fp++
			}
			hi++
		}
		c := Confusion{TP: tp, FP: fp, FN: pos - tp, TN: neg - fp}
		var v float64
		switch objective {
		case ObjectiveF1:
			v = c.F1()
		case ObjectiveYouden:
			v = float64(tp)/float64(pos) - float64(fp)/float64(neg)
		case ObjectivePrecisionAtRecall:
			if c.Recall() < minRecall {
				lo = hi
				continue
			}
			v = c.Precision()
		default:
			return 0, 0, fmt.Errorf("metrics: unknown threshold objective %q", objective)
		}
		if v > best {
			best, threshold, found = v, float64(probs[idx[lo]]), true
		}
		lo = hi
	}
	if !found {
		return 0, 0, fmt.Errorf("metrics: no threshold reaches recall %v", minRecall)
	}
	return threshold, best, nil
}

func cmpDesc(a, b float32) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}
