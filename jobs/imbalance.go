package jobs

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// ClassWeightsBalanced is spec.training.classWeights' short form: every class weighted
// by n_rows / (n_classes · n_rows_of_class) over the training rows (sklearn's
// class_weight="balanced").
const ClassWeightsBalanced = "balanced"

// ClassWeights is spec.training.classWeights (classification tasks): the weight of
// each class's rows in the training loss, as Keras' class_weight. Written as
// `balanced` or as a mapping of label value to weight ({"Yes": 5, "No": 1}); a class
// the mapping leaves out weighs 1. The mapping's classes are checked against the data
// when it is read.
type ClassWeights struct {
	// Balanced is the short form `balanced`.
	Balanced bool `json:"balanced,omitempty"`
	// Weights maps a label value (as written in the data; a class index for idx and
	// sequence_csv) to its weight, > 0.
	Weights map[string]float64 `json:"weights,omitempty"`
}

// decodeNode reads `balanced` or a mapping of class to weight.
func (c *ClassWeights) decodeNode(d *decoder, path string, n *yaml.Node) {
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
		if n.Value != ClassWeightsBalanced {
			d.fail(path, n.Line, "%q is not %q; write %s or a mapping of class to weight", n.Value, ClassWeightsBalanced, ClassWeightsBalanced)
			return
		}
		c.Balanced = true
	case n.Kind == yaml.MappingNode && n.ShortTag() == "!!map":
		d.value(path, n, reflect.ValueOf(&c.Weights).Elem(), false)
	default:
		d.fail(path, n.Line, "expected %s or a mapping of class to weight, got %s", ClassWeightsBalanced, describe(n))
	}
}

// MarshalYAML writes the form Parse reads: balanced, or the mapping.
func (c ClassWeights) MarshalYAML() (any, error) {
	if c.Balanced {
		return ClassWeightsBalanced, nil
	}
	return c.Weights, nil
}

// Threshold objectives (spec.export.threshold.optimize).
const (
	// ThresholdF1 maximises F1 on the validation split.
	ThresholdF1 = "f1"
	// ThresholdYouden maximises Youden's J = TPR - FPR on the validation split.
	ThresholdYouden = "youden"
	// ThresholdPrecisionAtRecall maximises precision among the thresholds whose
	// validation recall is at least the given one.
	ThresholdPrecisionAtRecall = "precisionAtRecall"
)

// ThresholdObjectives lists the values of spec.export.threshold.optimize.
var ThresholdObjectives = []string{ThresholdF1, ThresholdYouden, ThresholdPrecisionAtRecall}

// DefaultThreshold is the decision threshold of a binary task without
// spec.export.threshold.
const DefaultThreshold = 0.5

// Threshold is spec.export.threshold (binary tasks): the decision threshold on the
// positive-class probability behind the `label` output of the exported model, serving
// and the audit. Written as a number (threshold: 0.3) or {optimize: f1 | youden |
// {precisionAtRecall: 0.8}}: fitted on the validation split at the exported
// checkpoint and saved with the model.
type Threshold struct {
	// Value is a fixed threshold in (0, 1); nil when fitted.
	Value *float64 `yaml:"value" json:"value,omitempty"`
	// Optimize is the objective of a fitted threshold.
	Optimize *ThresholdOptimize `yaml:"optimize" json:"optimize,omitempty"`
}

// decodeNode reads a number or the mapping.
func (t *Threshold) decodeNode(d *decoder, path string, n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!float" || n.ShortTag() == "!!int") {
		var f float64
		d.value(path+".value", n, reflect.ValueOf(&f).Elem(), false)
		t.Value = &f
		d.lines[path+".value"] = n.Line
		return
	}
	if n.Kind != yaml.MappingNode || n.ShortTag() != "!!map" {
		d.fail(path, n.Line, "expected a number or a mapping {optimize: ...}, got %s", describe(n))
		return
	}
	d.mapping(path, n, reflect.ValueOf(t).Elem())
}

// ThresholdOptimize is spec.export.threshold.optimize: `f1`, `youden`, or
// {precisionAtRecall: R}.
type ThresholdOptimize struct {
	// Objective is one of ThresholdObjectives.
	Objective string `yaml:"objective" json:"objective"`
	// PrecisionAtRecall is the least validation recall, in (0, 1], of objective
	// precisionAtRecall (which it implies).
	PrecisionAtRecall float64 `yaml:"precisionAtRecall" json:"precisionAtRecall,omitempty"`
}

// setScalar reads the short form: an objective alone.
func (o *ThresholdOptimize) setScalar(v string) string {
	o.Objective = v
	return "objective"
}

// scalarShape names both forms in type errors.
func (*ThresholdOptimize) scalarShape() string {
	return "f1, youden or a mapping {precisionAtRecall: R}"
}

// nodeDecoder is implemented by spec types with a form the generic decoder cannot read
// (a mapping of arbitrary keys, or a number standing for a mapping).
type nodeDecoder interface {
	decodeNode(d *decoder, path string, n *yaml.Node)
}

// nodeDecoderOf returns v (or, for a nil pointer, a new value v then points to) as a
// nodeDecoder when its type is one.
func nodeDecoderOf(v reflect.Value) (nodeDecoder, bool) {
	if v.Kind() == reflect.Pointer {
		if _, ok := reflect.New(v.Type().Elem()).Interface().(nodeDecoder); !ok {
			return nil, false
		}
		elem := reflect.New(v.Type().Elem())
		v.Set(elem)
		return elem.Interface().(nodeDecoder), true
	}
	if !v.CanAddr() {
		return nil, false
	}
	nd, ok := v.Addr().Interface().(nodeDecoder)
	return nd, ok
}

// imbalance checks spec.training.classWeights and spec.export.threshold.
func (v *validator) imbalance() {
	s := &v.j.Spec
	if cw := s.Training.ClassWeights; cw != nil {
		const p = "spec.training.classWeights"
		switch {
		case s.Task == TaskRegression:
			v.add(p, "applies only to classification tasks, not %s", s.Task)
		case cw.Balanced && len(cw.Weights) > 0:
			v.add(p, "set either %s or a mapping, not both", ClassWeightsBalanced)
		case !cw.Balanced && len(cw.Weights) == 0:
			v.add(p, "an empty mapping; write %s or a mapping of class to weight", ClassWeightsBalanced)
		}
		keys := make([]string, 0, len(cw.Weights))
		for k := range cw.Weights {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if w := cw.Weights[k]; !(w > 0) || math.IsInf(w, 0) || w > MaxClassWeight {
				v.add(p+"."+k, "weight must be greater than 0 and at most %d, got %g", MaxClassWeight, w)
			}
		}
		if s.Task == TaskBinary && len(cw.Weights) > 2 {
			v.add(p, "a binary task has two classes; the mapping names %d (%s)", len(cw.Weights), strings.Join(keys, ", "))
		}
	}
	if sq := s.Data.SequenceCSV; sq != nil && (sq.Baseline != "" || len(sq.Calendar) > 0) &&
		slices.Contains(s.Export.Formats, ExportONNX) && s.Export.ONNX.Preprocessing == DefaultONNXPreprocessing {
		v.add("spec.export.onnx.preprocessing", "the %s form cannot compute sequence_csv.baseline or sequence_csv.calendar inside the graph; "+
			"set it to separate (the graph then takes the prepared steps and predicts, for baseline %s, the scaled residual; see preprocessing.json)",
			DefaultONNXPreprocessing, BaselineSeasonalNaive)
	}
	th := s.Export.Threshold
	if th == nil {
		return
	}
	const p = "spec.export.threshold"
	if _, written := v.j.lines["spec.audit.threshold"]; written && s.Audit != nil {
		v.add("spec.audit.threshold", "set the decision threshold once: spec.export.threshold is set, and the audit uses it")
	}
	if s.Task != TaskBinary {
		v.add(p, "applies only to task %s, not %s", TaskBinary, s.Task)
		return
	}
	switch {
	case th.Value != nil && th.Optimize != nil:
		v.add(p, "set either a value or optimize, not both")
	case th.Value == nil && th.Optimize == nil:
		v.add(p, "set a value (threshold: 0.3) or optimize (threshold: {optimize: f1})")
	case th.Value != nil:
		if x := *th.Value; !(x > 0 && x < 1) {
			v.add(p, "must be between 0 and 1 (exclusive), got %g", x)
		}
	default:
		o := th.Optimize
		op := p + ".optimize"
		if !slices.Contains(ThresholdObjectives, o.Objective) {
			v.add(op, "%q is not one of f1, youden, {precisionAtRecall: R}", o.Objective)
			return
		}
		switch {
		case o.Objective == ThresholdPrecisionAtRecall && !(o.PrecisionAtRecall > 0 && o.PrecisionAtRecall <= 1):
			v.add(op+".precisionAtRecall", "the least recall must be greater than 0 and at most 1, got %g", o.PrecisionAtRecall)
		case o.Objective != ThresholdPrecisionAtRecall && o.PrecisionAtRecall != 0:
			v.add(op+".precisionAtRecall", "applies only to objective %s, not %s", ThresholdPrecisionAtRecall, o.Objective)
		}
	}
}

// MaxClassWeight bounds a class weight of spec.training.classWeights.
const MaxClassWeight = 1_000_000

// String renders the threshold setting for logs: "0.3", "f1", "precisionAtRecall 0.8".
func (t *Threshold) String() string {
	switch {
	case t == nil:
		return fmt.Sprint(DefaultThreshold)
	case t.Value != nil:
		return fmt.Sprint(*t.Value)
	case t.Optimize == nil:
		return ""
	case t.Optimize.Objective == ThresholdPrecisionAtRecall:
		return fmt.Sprintf("%s %g", ThresholdPrecisionAtRecall, t.Optimize.PrecisionAtRecall)
	}
	return t.Optimize.Objective
}
