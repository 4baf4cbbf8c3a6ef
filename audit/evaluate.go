package audit

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/cohort-dev/cohort/worker/metrics"
)

// Input is what Evaluate evaluates: one split's predictions, labels and sensitive
// columns, row by row.
type Input struct {
	// Scores are the model's outputs. Binary: P(positive) per row, in [0, 1].
	// Multiclass: len(Classes) class probabilities per row, row-major. Regression: the
	// prediction per row in target units.
	Scores []float64
	// Labels are the true values per row. Binary: 0 or 1. Multiclass: the class index.
	// Regression: the target in target units.
	Labels []float64
	// Classes are a classifier's label values, index = class id; a multiclass task
	// needs them, a binary one defaults to "0", "1".
	Classes []string
	// Groups maps each sensitive column of Config.Sensitive to its raw category per
	// row; missing values (IsMissing) form their own group. Other keys are ignored.
	Groups map[string][]string
}

// Metric names, after the split prefix.
const (
	metricAUC      = "auc"
	metricAccuracy = "accuracy"
	metricLoss     = "loss"
	metricRMSE     = "rmse"
	metricMAE      = "mae"
)

// Evaluate computes the report of one split: metrics with their bootstrap confidence
// intervals, calibration and confusion matrix (classifiers), and the audit section —
// always present, with the group figures of the sensitive columns (none when
// Config.Sensitive is empty), the notes and the gate (when one is configured). The report's JobID, Name, Model and explanations are
// left for the caller. Evaluate returns an error, naming the problem, for an invalid
// config and for input that does not fit it: lengths that differ, no rows, a NaN or
// infinite score or label, a probability outside [0, 1], a binary label other than 0
// or 1, a class index out of range, a sensitive column that is absent or has more than
// MaxCategories categories.
func Evaluate(cfg Config, in Input) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n, classes, err := checkInput(cfg, in)
	if err != nil {
		return nil, err
	}
	rep := &Report{
		FormatVersion: FormatVersion,
		Task:          cfg.Task,
		Split:         cfg.Split,
		Rows:          n,
		Classes:       classes,
		Metrics:       make(map[string]Metric),
	}
	if cfg.Resamples > 0 {
		rep.Bootstrap = &BootstrapInfo{Resamples: cfg.Resamples, Seed: cfg.Seed}
	}
	var notes []string
	var ranked *rankedBinary
	switch cfg.Task {
	case TaskBinary:
		ranked, notes = evaluateBinary(cfg, in, rep)
	case TaskMulticlass:
		notes = evaluateMulticlass(cfg, in, rep)
	case TaskRegression:
		notes = evaluateRegression(cfg, in, rep)
	}
	if cfg.Resamples == 0 {
		notes = append(notes, "bootstrap disabled (0 resamples): each ci95 is [value, value]")
	}
	sec, attrs := auditGroups(cfg, in, n, ranked)
	sec.Notes = append(notes, sec.Notes...)
	if cfg.Gate.set() {
		sec.Gate = evaluateGate(cfg, rep.Metrics, sec.Groups, attrs)
	}
	rep.Audit = sec
	return rep, nil
}

// checkInput checks the input against the config and returns the row count and the
// report's classes.
func checkInput(cfg Config, in Input) (int, []string, error) {
	n := len(in.Labels)
	classes := slices.Clone(in.Classes)
	switch cfg.Task {
	case TaskBinary:
		switch len(classes) {
		case 0:
			classes = []string{"0", "1"}
		case 2:
		default:
			return 0, nil, fmt.Errorf("audit: %s with %d classes %q (want 2)", cfg.Task, len(classes), classes)
		}
		fallthrough
	case TaskRegression:
		if cfg.Task == TaskRegression {
			classes = nil
		}
		if len(in.Scores) != n {
			return 0, nil, fmt.Errorf("audit: %d scores for %d labels", len(in.Scores), n)
		}
	case TaskMulticlass:
		k := len(classes)
		if k < 2 {
			return 0, nil, fmt.Errorf("audit: %s needs at least 2 classes, got %d", cfg.Task, k)
		}
		if len(in.Scores) != n*k {
			return 0, nil, fmt.Errorf("audit: %d scores for %d labels of %d classes (want %d)", len(in.Scores), n, k, n*k)
		}
	}
	if n == 0 {
		return 0, nil, fmt.Errorf("audit: no rows to evaluate")
	}
	k := max(1, len(classes))
	if cfg.Task == TaskBinary {
		k = 1
	}
	for i, s := range in.Scores {
		row := i / k
		switch {
		case math.IsNaN(s):
			return 0, nil, fmt.Errorf("audit: score at row %d is NaN", row)
		case math.IsInf(s, 0):
			return 0, nil, fmt.Errorf("audit: score at row %d is %g", row, s)
		case cfg.Task != TaskRegression && (s < 0 || s > 1):
			return 0, nil, fmt.Errorf("audit: probability %g at row %d is outside [0, 1]", s, row)
		}
	}
	for i, l := range in.Labels {
		switch {
		case !finite(l):
			return 0, nil, fmt.Errorf("audit: label at row %d is %g", i, l)
		case cfg.Task == TaskBinary && l != 0 && l != 1:
			return 0, nil, fmt.Errorf("audit: binary label %g at row %d (want 0 or 1)", l, i)
		case cfg.Task == TaskMulticlass && (l != math.Trunc(l) || l < 0 || l >= float64(len(classes))):
			return 0, nil, fmt.Errorf("audit: class index %g at row %d (want an integer in [0, %d))", l, i, len(classes))
		}
	}
	for _, name := range cfg.Sensitive {
		col, ok := in.Groups[name]
		if !ok {
			return 0, nil, fmt.Errorf("audit: sensitive column %q not in the input", name)
		}
		if len(col) != n {
			return 0, nil, fmt.Errorf("audit: sensitive column %q has %d values for %d rows", name, len(col), n)
		}
		if err := CheckSensitive(name, col); err != nil {
			return 0, nil, err
		}
	}
	return n, classes, nil
}

// setMetrics stores the point values and bootstrap intervals of stats under the
// prefixed names, and returns a note for each stat left out of some resamples.
func setMetrics(cfg Config, rep *Report, n int, names []string, stats []rowStat) []string {
	point := make([]float64, len(stats))
	for i, s := range stats {
		point[i], _ = s(nil)
	}
	var notes []string
	for i, iv := range bootstrapCI(n, cfg.Resamples, cfg.Seed, point, stats) {
		name := cfg.Prefix + names[i]
		rep.Metrics[name] = Metric{Value: point[i], CI95: iv.ci}
		if iv.undefined > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d of %d resamples had one class only and are not in its ci95", name, iv.undefined, cfg.Resamples))
		}
	}
	return notes
}

// evaluateBinary fills the metrics, calibration and confusion matrix of a binary
// classifier, and returns the scores ranked for the group figures.
func evaluateBinary(cfg Config, in Input, rep *Report) (*rankedBinary, []string) {
	n := len(in.Labels)
	r := &rankedBinary{}
	r.rank(in.Scores, func(i int) bool { return in.Labels[i] == 1 })
	// Per-row figures in sorted order, so that one weight vector serves every stat.
	correct := make([]float64, n)
	loss := make([]float64, n)
	for j, i := range r.order {
		p := min(max(in.Scores[i], metrics.LogLossEpsilon), 1-metrics.LogLossEpsilon)
		if r.pos[j] {
			loss[j] = -math.Log(p)
		} else {
			loss[j] = -math.Log(1 - p)
		}
		if (in.Scores[i] >= cfg.Threshold) == r.pos[j] {
			correct[j] = 1
		}
	}
	var notes []string
	names := []string{metricAccuracy, metricLoss}
	stats := []rowStat{
		func(w []int32) (float64, bool) { return weightedMean(correct, w), true },
		func(w []int32) (float64, bool) { return weightedMean(loss, w), true },
	}
	if _, ok := r.auc(nil); ok {
		names = append([]string{metricAUC}, names...)
		stats = append([]rowStat{r.auc}, stats...)
	} else {
		notes = append(notes, fmt.Sprintf("%sauc omitted: the %s split has only one class", cfg.Prefix, cfg.Split))
	}
	notes = append(notes, setMetrics(cfg, rep, n, names, stats)...)
	rep.Calibration = calibration(in.Scores, in.Labels)
	th := cfg.Threshold
	m := [][]int{{0, 0}, {0, 0}}
	for i, s := range in.Scores {
		pred := 0
		if s >= th {
			pred = 1
		}
		m[int(in.Labels[i])][pred]++
	}
	rep.Confusion = &Confusion{Threshold: &th, Labels: rep.Classes, Matrix: m}
	return r, notes
}

// CalibrationBins is the number of equal-width bins of a reliability table.
const CalibrationBins = 10

// calibration returns the reliability table of binary scores.
func calibration(scores, labels []float64) *Calibration {
	edges := make([]float64, CalibrationBins+1)
	for i := range edges {
		edges[i] = float64(i) / CalibrationBins
	}
	count := make([]int, CalibrationBins)
	sumP := make([]float64, CalibrationBins)
	pos := make([]int, CalibrationBins)
	for i, s := range scores {
		b := min(int(s*CalibrationBins), CalibrationBins-1)
		// Settle rounding at the edges against the edges as reported.
		for b > 0 && s < edges[b] {
			b--
		}
		for b < CalibrationBins-1 && s >= edges[b+1] {
			b++
		}
		count[b]++
		sumP[b] += s
		if labels[i] == 1 {
			pos[b]++
		}
	}
	c := &Calibration{Bins: make([]CalibrationBin, CalibrationBins)}
	n := float64(len(scores))
	for b := range c.Bins {
		bin := CalibrationBin{Lower: edges[b], Upper: edges[b+1], Count: count[b]}
		if count[b] > 0 {
			mp := sumP[b] / float64(count[b])
			fp := float64(pos[b]) / float64(count[b])
			bin.MeanPredicted, bin.FractionPositive = &mp, &fp
			c.ECE += float64(count[b]) / n * math.Abs(mp-fp)
		}
		c.Bins[b] = bin
	}
	return c
}

// argmax returns the index of the largest value, the first on ties.
func argmax(row []float64) int {
	best := 0
	for c, p := range row {
		if p > row[best] {
			best = c
		}
	}
	return best
}

// evaluateMulticlass fills the metrics and confusion matrix of a multiclass classifier.
func evaluateMulticlass(cfg Config, in Input, rep *Report) []string {
	n, k := len(in.Labels), len(rep.Classes)
	correct := make([]float64, n)
	loss := make([]float64, n)
	m := make([][]int, k)
	for c := range m {
		m[c] = make([]int, k)
	}
	for i, l := range in.Labels {
		row := in.Scores[i*k : (i+1)*k]
		pred, label := argmax(row), int(l)
		if pred == label {
			correct[i] = 1
		}
		loss[i] = -math.Log(min(max(row[label], metrics.LogLossEpsilon), 1-metrics.LogLossEpsilon))
		m[label][pred]++
	}
	rep.Confusion = &Confusion{Labels: rep.Classes, Matrix: m}
	return setMetrics(cfg, rep, n, []string{metricAccuracy, metricLoss}, []rowStat{
		func(w []int32) (float64, bool) { return weightedMean(correct, w), true },
		func(w []int32) (float64, bool) { return weightedMean(loss, w), true },
	})
}

// evaluateRegression fills the metrics of a regressor.
func evaluateRegression(cfg Config, in Input, rep *Report) []string {
	n := len(in.Labels)
	sq := make([]float64, n)
	abs := make([]float64, n)
	for i, l := range in.Labels {
		d := in.Scores[i] - l
		sq[i], abs[i] = d*d, math.Abs(d)
	}
	return setMetrics(cfg, rep, n, []string{metricRMSE, metricMAE}, []rowStat{
		func(w []int32) (float64, bool) { return math.Sqrt(weightedMean(sq, w)), true },
		func(w []int32) (float64, bool) { return weightedMean(abs, w), true },
	})
}

// formatNumber writes v as briefly as it round-trips.
func formatNumber(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// formatAgainst writes v rounded to 2 decimals, or to as many more as it takes for the
// written value to stay on v's side of the limit (so that 0.7996 < 0.8 is not written
// "0.80 < 0.8").
func formatAgainst(v, limit float64) string {
	for d := 2; d <= 8; d++ {
		s := strconv.FormatFloat(v, 'f', d, 64)
		r, _ := strconv.ParseFloat(s, 64)
		if (v < limit) == (r < limit) && (v > limit) == (r > limit) {
			return trimZeros(s)
		}
	}
	return formatNumber(v)
}

// trimZeros drops the trailing zeros of a decimal and then a trailing point.
func trimZeros(s string) string {
	for len(s) > 1 && s[len(s)-1] == '0' && slices.Contains([]byte(s), '.') {
		s = s[:len(s)-1]
	}
	if len(s) > 1 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}
