package web

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// SpecRow is one line of the job page's spec table.
type SpecRow struct {
	// Group is the table section the row belongs to ("Hyperparameters", "Resources",
	// "Data", "Run").
	Group string `json:"group"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// SpecView is a job's spec as the job page shows it: the hyperparameters first, then
// the resources, the data and how the run is kept; and the submitted YAML verbatim.
type SpecView struct {
	Rows []SpecRow `json:"rows"`
	// YAML is the spec as submitted.
	YAML string `json:"yaml"`
	// Error says why the rows are incomplete (the spec does not parse with this
	// dashboard's version of package jobs); the YAML is still shown.
	Error string `json:"error,omitempty"`
	// ScoreMetric and ScoreMode are spec.checkpoint.scoreBy when the spec sets it.
	ScoreMetric string `json:"score_metric,omitempty"`
	ScoreMode   string `json:"score_mode,omitempty"`
}

// Groups returns the rows grouped in order of first appearance, for the template.
func (s SpecView) Groups() []SpecGroup {
	var out []SpecGroup
	for _, r := range s.Rows {
		if n := len(out); n == 0 || out[n-1].Name != r.Group {
			out = append(out, SpecGroup{Name: r.Group})
		}
		out[len(out)-1].Rows = append(out[len(out)-1].Rows, r)
	}
	return out
}

// SpecGroup is a run of rows of one group.
type SpecGroup struct {
	Name string
	Rows []SpecRow
}

// specView describes j's spec. The spec is parsed with package jobs (so defaults are
// shown as the job ran with them); the resources come from the job record, which
// holds them resolved. Fields that package jobs is still growing (checkpoint.scoreBy,
// training.earlyStopping) are read from the YAML itself, so the page shows them
// whichever version of the spec types it is built with.
func specView(j *cohortv1.Job) SpecView {
	v := SpecView{YAML: string(j.GetSpecYaml())}
	var rows []SpecRow
	add := func(group, name, value string) {
		if value != "" {
			rows = append(rows, SpecRow{Group: group, Name: name, Value: value})
		}
	}
	const hp, res, data, run = "Hyperparameters", "Resources", "Data", "Run"

	var raw map[string]any
	_ = yaml.Unmarshal(j.GetSpecYaml(), &raw) // best effort: only for the optional fields
	rawSpec, _ := raw["spec"].(map[string]any)
	rawAt := func(path ...string) any {
		var cur any = rawSpec
		for _, p := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[p]
		}
		return cur
	}

	tj, err := jobs.Parse(j.GetSpecYaml())
	if len(j.GetSpecYaml()) == 0 {
		err = fmt.Errorf("the job record holds no spec")
	}
	if err != nil {
		v.Error = err.Error()
	} else {
		s := tj.Spec
		add(hp, "Task", strings.ReplaceAll(s.Task, "_", " "))
		add(hp, "Model", modelText(s.Model))
		add(hp, "Optimizer", optimizerText(s.Training.Optimizer))
		add(hp, "Learning rate", formatFloat(s.Training.Optimizer.LearningRate))
		add(hp, "Batch size", strconv.Itoa(s.Training.BatchSize)+" per worker")
		add(hp, "Epochs", strconv.Itoa(s.Training.Epochs))
		add(hp, "Consistency", consistencyText(s.Training.Consistency))
		add(hp, "Seed", strconv.FormatInt(s.Training.Seed, 10))
	}
	add(hp, "Early stopping", flowText(rawAt("training", "earlyStopping")))

	add(res, "Workers", workersText(j))
	add(res, "Parameter servers", fmt.Sprintf("%d shards × %s", j.GetShardCount(), resourcesView(j.GetShardResources())))
	add(res, "Namespace / queue", fmt.Sprintf("%s / %s, priority %d", j.GetNamespace(), j.GetQueue(), j.GetPriority()))
	if n := len(j.GetNodeSelector()); n > 0 || j.GetSpread() {
		var parts []string
		for _, k := range sortedKeys(j.GetNodeSelector()) {
			parts = append(parts, k+"="+j.GetNodeSelector()[k])
		}
		p := strings.Join(parts, ", ")
		if j.GetSpread() {
			p = strings.TrimPrefix(p+", spread", ", ")
		}
		add(res, "Placement", p)
	}

	if err == nil {
		d := tj.Spec.Data
		add(data, "Format", d.Format)
		add(data, "Train", d.Train)
		add(data, "Validation", validationText(d.Validation))
		add(data, "Test", d.Test)
		label := d.Label
		if d.Positive != "" && label != "" {
			label += " (positive: " + d.Positive + ")"
		}
		add(data, "Label", label)
		if len(d.Exclude) > 0 {
			add(data, "Excluded columns", strings.Join(d.Exclude, ", "))
		}

		c := tj.Spec.Checkpoint
		ck := ""
		if c.EverySteps > 0 {
			ck = "every " + strconv.Itoa(c.EverySteps) + " steps, "
		}
		add(run, "Checkpoints", ck+"keep "+strconv.Itoa(c.Keep))
		add(run, "Export", strings.Join(tj.Spec.Export.Formats, ", "))
	}
	switch sb := rawAt("checkpoint", "scoreBy").(type) {
	case string:
		v.ScoreMetric = sb
	case map[string]any:
		v.ScoreMetric, _ = sb["metric"].(string)
		v.ScoreMode, _ = sb["mode"].(string)
	}
	if v.ScoreMetric != "" {
		t := v.ScoreMetric
		if v.ScoreMode != "" {
			t += " (" + v.ScoreMode + ")"
		}
		if kb := rawAt("checkpoint", "keepBest"); kb != nil {
			t += fmt.Sprintf(", keep best %v", kb)
		}
		add(run, "Best checkpoint by", t)
	}
	if j.GetMaxRestarts() > 0 || j.GetRestarts() > 0 {
		add(run, "Restarts", fmt.Sprintf("%d of %d", j.GetRestarts(), j.GetMaxRestarts()))
	}
	if rawAt("audit") != nil {
		add(run, "Audit", "sensitive: "+flowText(rawAt("audit", "sensitive")))
	}
	v.Rows = rows
	return v
}

func modelText(m jobs.Model) string {
	switch {
	case m.MLP != nil:
		s := "MLP, hidden " + intsText(m.MLP.Hidden) + ", " + m.MLP.Activation
		return s + dropoutText(m.MLP.Dropout)
	case m.CNN != nil:
		var conv []string
		for _, c := range m.CNN.Conv {
			l := strconv.Itoa(c.Filters) + "×" + strconv.Itoa(c.Kernel)
			if c.Stride > 1 {
				l += "/" + strconv.Itoa(c.Stride)
			}
			conv = append(conv, l)
		}
		s := "CNN, conv " + strings.Join(conv, " ")
		if m.CNN.Pool > 0 {
			s += ", pool " + strconv.Itoa(m.CNN.Pool)
		}
		if len(m.CNN.Dense) > 0 {
			s += ", dense " + intsText(m.CNN.Dense)
		}
		if m.CNN.Activation != "" {
			s += ", " + m.CNN.Activation
		}
		return s + dropoutText(m.CNN.Dropout)
	case m.LSTM != nil:
		s := "LSTM, hidden " + intsText(m.LSTM.Hidden)
		if len(m.LSTM.Dense) > 0 {
			s += ", dense " + intsText(m.LSTM.Dense)
		}
		return s + dropoutText(m.LSTM.Dropout)
	}
	return ""
}

func dropoutText(p float64) string {
	if p <= 0 {
		return ""
	}
	return ", dropout " + formatFloat(p)
}

func intsText(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, "-")
}

func optimizerText(o jobs.Optimizer) string {
	s := o.Name
	var extra []string
	if o.Momentum != 0 {
		extra = append(extra, "momentum "+formatFloat(o.Momentum))
	}
	if o.Beta1 != 0 {
		extra = append(extra, "β1 "+formatFloat(o.Beta1))
	}
	if o.Beta2 != 0 {
		extra = append(extra, "β2 "+formatFloat(o.Beta2))
	}
	if o.Epsilon != 0 {
		extra = append(extra, "ε "+formatFloat(o.Epsilon))
	}
	if o.WeightDecay != 0 {
		extra = append(extra, "weight decay "+formatFloat(o.WeightDecay))
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, ", ") + ")"
	}
	return s
}

func consistencyText(c jobs.Consistency) string {
	if c.Mode == jobs.ConsistencyBounded {
		return "bounded, staleness " + strconv.Itoa(c.Staleness)
	}
	return c.Mode
}

func validationText(v jobs.Validation) string {
	if v.URI != "" {
		return v.URI
	}
	s := formatFloat(100*v.Fraction) + "% of train, seed " + strconv.FormatInt(v.Seed, 10)
	if v.Stratify {
		s += ", stratified"
	}
	return s
}

// workersText describes the job's workers from its record: count, elastic bounds,
// what each holds.
func workersText(j *cohortv1.Job) string {
	s := strconv.Itoa(int(j.GetWorkerCount()))
	lo, hi := j.GetMinWorkers(), j.GetMaxWorkers()
	if (lo > 0 && lo != j.GetWorkerCount()) || (hi > 0 && hi != j.GetWorkerCount()) {
		s += fmt.Sprintf(" (elastic %d–%d", max(lo, 1), max(hi, j.GetWorkerCount()))
		if a := j.GetActiveWorkers(); a > 0 {
			s += fmt.Sprintf(", %d active", a)
		}
		s += ")"
	}
	return s + " × " + resourcesView(j.GetWorkerResources()).String()
}

// flowText writes a decoded YAML value on one line ("{monitor: val_auc, patience: 5}");
// "" for nil.
func flowText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case map[string]any:
		var parts []string
		for _, k := range sortedKeys(x) {
			parts = append(parts, k+": "+flowText(x[k]))
		}
		return strings.Join(parts, ", ")
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = flowText(e)
		}
		return strings.Join(parts, ", ")
	case float64:
		return formatFloat(x)
	}
	return fmt.Sprint(v)
}

// formatFloat formats a hyperparameter: as short as it reads back ("0.001", "64").
func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
