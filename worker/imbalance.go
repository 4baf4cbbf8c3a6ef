package worker

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/metrics"
)

// classNames are the names spec.training.classWeights may use for ds's classes: the
// label values of a tabular classifier, the class indices ("0", "1", ...) otherwise.
func classNames(s *jobs.Spec, ds *datasets) []string {
	if len(ds.classes) > 0 {
		return ds.classes
	}
	k := ds.outputs
	if s.Task == jobs.TaskBinary {
		k = 2
	}
	names := make([]string, k)
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	return names
}

// resolveClassWeights turns spec.training.classWeights into one weight per class id:
// `balanced` is n / (k · n_c) over the training rows (sklearn's
// compute_class_weight("balanced")); a mapping must name classes of the data (a class it
// leaves out weighs 1). nil without classWeights.
func resolveClassWeights(s *jobs.Spec, ds *datasets) ([]float64, error) {
	cw := s.Training.ClassWeights
	if cw == nil || s.Task == jobs.TaskRegression {
		return nil, nil
	}
	names := classNames(s, ds)
	k := len(names)
	w := make([]float64, k)
	if cw.Balanced {
		counts := make([]int, k)
		for _, y := range ds.train.Y {
			if c := int(y); c >= 0 && c < k {
				counts[c]++
			}
		}
		for c, n := range counts {
			if n == 0 {
				return nil, fmt.Errorf("spec.training.classWeights: balanced: class %q has no training rows", names[c])
			}
			w[c] = float64(ds.train.N) / (float64(k) * float64(n))
		}
		return w, nil
	}
	for c := range w {
		w[c] = 1
	}
	what := "class index"
	if len(ds.classes) > 0 {
		what = "value of spec.data.label " + strconv.Quote(s.Data.Label)
	}
	keys := make([]string, 0, len(cw.Weights))
	for key := range cw.Weights {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		c := slices.Index(names, key)
		if c < 0 {
			return nil, fmt.Errorf("spec.training.classWeights.%s: %q is not a %s (classes: %s)%s", key, key, what,
				strings.Join(names, ", "), jobs.DidYouMean(key, names))
		}
		w[c] = cw.Weights[key]
	}
	return w, nil
}

// decisionThreshold is the threshold the spec fixes (export.threshold's value, else
// jobs.DefaultThreshold); a fitted one replaces it at the end (fitThreshold).
func decisionThreshold(s *jobs.Spec) float64 {
	if t := s.Export.Threshold; t != nil && t.Value != nil {
		return *t.Value
	}
	return jobs.DefaultThreshold
}

// fitThreshold fits spec.export.threshold.optimize on the validation split's
// positive-class probabilities; ok is false when the spec asks for no fit.
func fitThreshold(s *jobs.Spec, probs, labels []float32) (threshold, value float64, ok bool, err error) {
	t := s.Export.Threshold
	if t == nil || t.Optimize == nil {
		return 0, 0, false, nil
	}
	th, v, err := metrics.FitThreshold(probs, labels, t.Optimize.Objective, t.Optimize.PrecisionAtRecall)
	if err != nil {
		return 0, 0, true, fmt.Errorf("spec.export.threshold: fitting %s on the validation split: %w", t, err)
	}
	return th, v, true, nil
}

// weightedGradient is loopState.gradient under class weights: the rows of each class
// form their own pieces, and the pieces' mean gradients are combined with weights
// w_c·n_c/n, which is the gradient of the class-weighted mean loss
// (1/n)·Σ_r w_{y_r}·loss_r (Keras' class_weight). The loss returned is that weighted
// mean.
func (l *loopState) weightedGradient(step int64, rows []int, weights []float64) (float64, error) {
	g := &l.grad
	byClass := make([][]int, len(weights))
	for _, r := range rows {
		c := min(max(int(l.ds.train.Y[r]), 0), len(weights)-1)
		byClass[c] = append(byClass[c], r)
	}
	if g.acc == nil {
		g.acc = make([]float32, len(g.values))
	}
	clear(g.acc)
	// Every class's pieces draw the dropout masks this step's call would draw
	// unweighted, and the model's call count ends where the unweighted step leaves it,
	// so that a resumed worker (which sets the count from the step) continues the same
	// stream.
	setter, _ := l.m.(gradientCallSetter)
	rank := l.t.rank
	if rank >= len(l.sched.calls) {
		setter = nil
	}
	var lossSum float64
	n := float64(len(rows))
	for c, part := range byClass {
		if len(part) == 0 {
			continue
		}
		if setter != nil {
			setter.SetGradientCalls(l.sched.calls[rank])
		}
		loss, err := l.plainGradient(step, part)
		if err != nil {
			return 0, err
		}
		a := float32(weights[c] * float64(len(part)) / n)
		for i, v := range g.values {
			g.acc[i] += a * v
		}
		lossSum += weights[c] * float64(len(part)) * loss
	}
	copy(g.values, g.acc)
	if setter != nil {
		batch := l.t.spec.Spec.Training.BatchSize
		setter.SetGradientCalls(l.sched.calls[rank] + uint64((len(rows)+batch-1)/batch))
	}
	if math.IsNaN(lossSum) {
		return 0, fmt.Errorf("worker: weighted loss at step %d is NaN", step)
	}
	return lossSum / n, nil
}

// fitThreshold fits spec.export.threshold.optimize on the validation split under the
// exported parameters (c.params) and makes it c.threshold. A validation split that
// cannot fit one (a single class) keeps the default threshold, with a warning.
func (c *chief) fitThreshold() error {
	s := &c.t.spec.Spec
	if s.Task != jobs.TaskBinary || s.Export.Threshold == nil || s.Export.Threshold.Optimize == nil {
		return nil
	}
	ds := c.ds.val
	probs := make([]float32, ds.N)
	if err := c.m.Predict(c.params, ds.X, ds.N, probs); err != nil {
		return fmt.Errorf("worker: fit the threshold: %w", err)
	}
	th, v, _, err := fitThreshold(s, probs, ds.Y)
	if err != nil {
		c.t.log.Warn("threshold not fitted; using the default", "threshold", jobs.DefaultThreshold, "err", err)
		c.markUndefined("threshold_fit", err.Error())
		c.threshold = jobs.DefaultThreshold
		return nil
	}
	c.threshold = th
	c.t.log.Info("decision threshold fitted on the validation split", "objective", s.Export.Threshold.String(),
		"threshold", round4(th), "value", round4(v), "rows", ds.N)
	return nil
}

// finalUndefined lists the reasons of the metrics the final metrics leave out, sorted
// by name ("val_auc: the validation split holds one class only (...)").
func (c *chief) finalUndefined(final map[string]float64) []string {
	var out []string
	for k, why := range c.undefined {
		if _, ok := final[k]; !ok {
			out = append(out, k+" undefined: "+why)
		}
	}
	slices.Sort(out)
	return out
}

// seasonalNaiveMetrics adds, for a sequence split, the seasonal-naive forecast's RMSE
// and MAE (rmse_seasonal_naive, mae_seasonal_naive) and the model's skill score against
// it, skill_seasonal_naive = 1 - rmse / naive rmse, all over the rows that have a
// seasonal-naive value (the model's RMSE too, so that both cover the same rows).
func (c *chief) seasonalNaiveMetrics(res map[string]float64, why map[string]string, ds *data.Dataset, pred, target []float32) {
	if ds.Naive == nil {
		return
	}
	var mp, mn, mt []float32
	for i, nv := range ds.Naive {
		if math.IsNaN(nv) {
			continue
		}
		mp, mn, mt = append(mp, pred[i]), append(mn, float32(nv)), append(mt, target[i])
	}
	const none = "no row has a target value one period (sequence_csv.period) earlier in its series"
	why["rmse_seasonal_naive"], why["mae_seasonal_naive"] = none, none
	why["skill_seasonal_naive"] = none
	naive := metrics.RMSE(mn, mt)
	res["rmse_seasonal_naive"] = naive
	res["mae_seasonal_naive"] = metrics.MAE(mn, mt)
	switch {
	case len(mt) == 0:
		res["skill_seasonal_naive"] = math.NaN()
	case naive == 0:
		why["skill_seasonal_naive"] = "the seasonal-naive forecast is exact (RMSE 0)"
		res["skill_seasonal_naive"] = math.NaN()
	default:
		res["skill_seasonal_naive"] = 1 - metrics.RMSE(mp, mt)/naive
	}
}
