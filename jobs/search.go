package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// SearchKind is the kind of a hyperparameter search spec.
const SearchKind = "Search"

// Search algorithms (spec.algorithm).
const (
	AlgorithmASHA   = "asha"
	AlgorithmRandom = "random"
	AlgorithmGrid   = "grid"
)

// Search limits.
const (
	// MaxSearchTrials bounds spec.maxTrials and the size of a grid.
	MaxSearchTrials = 1000
	// DefaultReductionFactor is ASHA's default reductionFactor (as Ray Tune's and
	// Determined's).
	DefaultReductionFactor = 3
)

// SearchPlan is a validated Search spec expanded into its trials: every trial's
// parameters are sampled from spec.seed and its TrainingJob spec is built and validated.
type SearchPlan struct {
	Name, Namespace string
	// Metric and Maximize are spec.objective.
	Metric   string
	Maximize bool
	// Algorithm is AlgorithmASHA, AlgorithmRandom or AlgorithmGrid; MinEpochs,
	// MaxEpochs and ReductionFactor are ASHA's (MaxEpochs is every trial's epochs).
	Algorithm                             string
	MinEpochs, MaxEpochs, ReductionFactor int
	ParallelTrials                        int
	Seed                                  int64
	Trials                                []TrialPlan
}

// TrialPlan is one trial of a search.
type TrialPlan struct {
	Index int
	// Parameters maps each spec.parameters path to its value, in JSON.
	Parameters map[string]string
	// Spec is the trial's TrainingJob spec (YAML), valid for Parse.
	Spec []byte
}

// paramDist is one spec.parameters entry.
type paramDist struct {
	path string
	line int
	kind string // uniform, logUniform, int, choice
	lo   float64
	hi   float64
	// ilo and ihi bound an int range.
	ilo, ihi int64
	choices  []*yaml.Node
}

// searchDecoder collects the problems of a Search spec.
type searchDecoder struct{ errs errorList }

func (d *searchDecoder) fail(path string, n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs.add(path, line, format, args...)
}

// mappingFields returns the fields of a mapping node, reporting unknown and duplicate
// ones (with a did-you-mean) against allowed.
func (d *searchDecoder) mappingFields(path string, n *yaml.Node, allowed ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "must be a mapping, got %s", describe(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := joinPath(path, k.Value)
		if allowed != nil && !slices.Contains(allowed, k.Value) {
			msg := "unknown field"
			if s := DidYouMean(k.Value, allowed); s != "" {
				msg += "; " + s
			}
			d.fail(p, k, "%s", msg)
			continue
		}
		if _, dup := out[k.Value]; dup {
			d.fail(p, k, "duplicate field")
			continue
		}
		if v.Kind == yaml.AliasNode {
			d.fail(p, v, "aliases are not supported; write the value out")
			continue
		}
		out[k.Value] = v
	}
	return out
}

func (d *searchDecoder) str(path string, n *yaml.Node) string {
	if n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.fail(path, n, "must be a string, got %s", describe(n))
		return ""
	}
	return n.Value
}

func (d *searchDecoder) integer(path string, n *yaml.Node) (int64, bool) {
	if n == nil {
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || err != nil {
		d.fail(path, n, "must be an integer, got %s", describe(n))
		return 0, false
	}
	return v, true
}

func (d *searchDecoder) number(path string, n *yaml.Node) (float64, bool) {
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		if v, err := strconv.ParseFloat(n.Value, 64); err == nil && !math.IsNaN(v) && !math.IsInf(v, 0) {
			return v, true
		}
	}
	d.fail(path, n, "must be a finite number, got %s", describe(n))
	return 0, false
}

// ResolveSearchTemplateFile returns a Search spec whose spec.templateFile (a path
// relative to dir, the directory of the Search file) is replaced by the file's content
// as spec.template, for submission to a coordinator that cannot read the client's
// files. A spec without templateFile is returned unchanged.
func ResolveSearchTemplateFile(data []byte, dir string) ([]byte, error) {
	root, fe := decodeDocument(data)
	if fe != nil || root.Kind != yaml.MappingNode {
		return data, nil // ExpandSearch reports it
	}
	spec := mappingValue(root, "spec")
	if spec == nil || spec.Kind != yaml.MappingNode {
		return data, nil
	}
	for i := 0; i+1 < len(spec.Content); i += 2 {
		if spec.Content[i].Value != "templateFile" {
			continue
		}
		v := spec.Content[i+1]
		if v.Kind != yaml.ScalarNode || v.Value == "" {
			return data, nil
		}
		p := v.Value
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, &SpecError{Errors: []FieldError{{Path: "spec.templateFile", Line: v.Line, Message: fmt.Sprintf("cannot read the template: %v", err)}}}
		}
		tmpl, tfe := decodeDocument(raw)
		if tfe != nil {
			tfe.Path = "spec.templateFile"
			tfe.Message = p + ": " + tfe.Message
			return nil, errorList{*tfe}.err()
		}
		spec.Content[i].Value = "template"
		spec.Content[i+1] = tmpl
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(root); err != nil {
			return nil, fmt.Errorf("jobs: encode search spec: %w", err)
		}
		return buf.Bytes(), nil
	}
	return data, nil
}

// IsSearchSpec reports whether a spec document declares kind: Search.
func IsSearchSpec(data []byte) bool {
	root, fe := decodeDocument(data)
	if fe != nil || root.Kind != yaml.MappingNode {
		return false
	}
	k := mappingValue(root, "kind")
	return k != nil && k.Value == SearchKind
}

// SearchMetadata returns a Search spec's metadata.name and metadata.namespace
// ("default" when unset) without validating the rest.
func SearchMetadata(data []byte) (name, namespace string, err error) {
	root, fe := decodeDocument(data)
	if fe != nil {
		return "", "", errorList{*fe}.err()
	}
	namespace = "default"
	if md := mappingValue(root, "metadata"); md != nil {
		if n := mappingValue(md, "name"); n != nil {
			name = n.Value
		}
		if n := mappingValue(md, "namespace"); n != nil && n.Value != "" {
			namespace = n.Value
		}
	}
	return name, namespace, nil
}

func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// ExpandSearch parses and validates a Search spec and expands it into its trials. Like
// Parse it is strict and reports every problem it finds with its field path and line
// (a *SpecError); a trial whose TrainingJob spec does not validate (a parameter path
// the TrainingJob schema does not have, a value out of range) is reported under
// spec.parameters or spec.template.
func ExpandSearch(data []byte) (*SearchPlan, error) {
	if len(data) > MaxSpecBytes {
		return nil, errorList{{Message: fmt.Sprintf("spec is %d bytes; the limit is %d", len(data), MaxSpecBytes)}}.err()
	}
	root, fe := decodeDocument(data)
	if fe != nil {
		return nil, errorList{*fe}.err()
	}
	d := &searchDecoder{}
	top := d.mappingFields("", root, "apiVersion", "kind", "metadata", "spec")
	if v := d.str("apiVersion", top["apiVersion"]); v != APIVersion {
		d.fail("apiVersion", orNode(top["apiVersion"], root), "must be %q", APIVersion)
	}
	if v := d.str("kind", top["kind"]); v != SearchKind {
		d.fail("kind", orNode(top["kind"], root), "must be %q", SearchKind)
	}
	plan := &SearchPlan{Namespace: "default", ParallelTrials: 1}
	if md := top["metadata"]; md != nil {
		f := d.mappingFields("metadata", md, "name", "namespace", "labels")
		plan.Name = d.str("metadata.name", f["name"])
		if ns := d.str("metadata.namespace", f["namespace"]); ns != "" {
			plan.Namespace = ns
		}
	}
	if plan.Name == "" {
		d.fail("metadata.name", orNode(top["metadata"], root), "is required")
	} else if !dnsLabel(plan.Name) {
		d.fail("metadata.name", orNode(top["metadata"], root), "must be a DNS label (lower-case letters, digits and '-', at most 63)")
	}
	specNode := top["spec"]
	if specNode == nil {
		d.fail("spec", root, "is required")
		return nil, d.errs.err()
	}
	sf := d.mappingFields("spec", specNode, "template", "templateFile", "parameters", "objective", "algorithm", "maxTrials", "parallelTrials", "seed")

	// template
	var tmplSpec *yaml.Node
	switch t, tf := sf["template"], sf["templateFile"]; {
	case t != nil && tf != nil:
		d.fail("spec.templateFile", tf, "give template or templateFile, not both")
	case tf != nil:
		d.fail("spec.templateFile", tf, "must be resolved by the client (cohort search submit and cohort dev --run read it relative to the Search file)")
	case t == nil:
		d.fail("spec.template", specNode, "is required (a TrainingJob spec, or templateFile: path)")
	case t.Kind != yaml.MappingNode:
		d.fail("spec.template", t, "must be a TrainingJob spec (a mapping), got %s", describe(t))
	default:
		tmplSpec = t
		// A whole TrainingJob document is accepted too: its spec is the template.
		if k := mappingValue(t, "kind"); k != nil {
			if k.Value != Kind {
				d.fail("spec.template.kind", k, "must be %q", Kind)
			}
			tmplSpec = mappingValue(t, "spec")
			if tmplSpec == nil || tmplSpec.Kind != yaml.MappingNode {
				d.fail("spec.template.spec", t, "is required")
				tmplSpec = nil
			}
		}
	}

	// objective
	if on := sf["objective"]; on == nil {
		d.fail("spec.objective", specNode, "is required ({metric: val_auc, mode: max})")
	} else {
		of := d.mappingFields("spec.objective", on, "metric", "mode")
		plan.Metric = d.str("spec.objective.metric", of["metric"])
		switch {
		case plan.Metric == "":
			d.fail("spec.objective.metric", on, "is required (a validation metric the trials report each epoch: val_auc, val_accuracy, val_loss, val_rmse, ...)")
		case !strings.HasPrefix(plan.Metric, "val_"):
			d.fail("spec.objective.metric", of["metric"], "must be a validation metric reported each epoch (val_auc, val_accuracy, val_loss, val_rmse, ...), got %q", plan.Metric)
		}
		plan.Maximize = metricMaximized(plan.Metric)
		switch mode := d.str("spec.objective.mode", of["mode"]); mode {
		case "":
		case "max":
			plan.Maximize = true
		case "min":
			plan.Maximize = false
		default:
			d.fail("spec.objective.mode", of["mode"], "must be max or min, got %q", mode)
		}
	}

	// algorithm
	if an := sf["algorithm"]; an == nil {
		d.fail("spec.algorithm", specNode, "is required (asha: {...}, random: {} or grid: {})")
	} else {
		af := d.mappingFields("spec.algorithm", an, AlgorithmASHA, AlgorithmRandom, AlgorithmGrid)
		if len(af) != 1 {
			if len(af) > 1 || len(d.errs) == 0 {
				d.fail("spec.algorithm", an, "must name exactly one of asha, random, grid")
			}
		}
		for name, v := range af {
			plan.Algorithm = name
			path := "spec.algorithm." + name
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
				continue
			}
			switch name {
			case AlgorithmASHA:
				f := d.mappingFields(path, v, "minEpochs", "maxEpochs", "reductionFactor")
				if x, ok := d.integer(path+".minEpochs", f["minEpochs"]); ok {
					plan.MinEpochs = int(x)
					if x < 1 || x > 100000 {
						d.fail(path+".minEpochs", f["minEpochs"], "must be 1..100000, got %d", x)
					}
				}
				if x, ok := d.integer(path+".maxEpochs", f["maxEpochs"]); ok {
					plan.MaxEpochs = int(x)
					if x < 1 || x > 100000 {
						d.fail(path+".maxEpochs", f["maxEpochs"], "must be 1..100000, got %d", x)
					}
				}
				if x, ok := d.integer(path+".reductionFactor", f["reductionFactor"]); ok {
					plan.ReductionFactor = int(x)
					if x < 2 || x > 100 {
						d.fail(path+".reductionFactor", f["reductionFactor"], "must be 2..100, got %d", x)
					}
				}
			default:
				d.mappingFields(path, v)
				if len(v.Content) > 0 {
					d.fail(path, v, "takes no settings; write %s: {}", name)
				}
			}
		}
	}
	if plan.Algorithm == AlgorithmASHA {
		if plan.MinEpochs == 0 {
			plan.MinEpochs = 1
		}
		if plan.ReductionFactor == 0 {
			plan.ReductionFactor = DefaultReductionFactor
		}
		if plan.MaxEpochs == 0 {
			plan.MaxEpochs = templateEpochs(tmplSpec)
		}
		if plan.MaxEpochs < plan.MinEpochs {
			d.fail("spec.algorithm.asha.maxEpochs", sf["algorithm"], "must be at least minEpochs (%d), got %d", plan.MinEpochs, plan.MaxEpochs)
		}
	}

	// counts
	maxTrials := 0
	if x, ok := d.integer("spec.maxTrials", sf["maxTrials"]); ok {
		maxTrials = int(x)
		if x < 1 || x > MaxSearchTrials {
			d.fail("spec.maxTrials", sf["maxTrials"], "must be 1..%d, got %d", MaxSearchTrials, x)
		}
	} else if sf["maxTrials"] == nil && plan.Algorithm != AlgorithmGrid && plan.Algorithm != "" {
		d.fail("spec.maxTrials", specNode, "is required for %s search", plan.Algorithm)
	}
	if x, ok := d.integer("spec.parallelTrials", sf["parallelTrials"]); ok {
		plan.ParallelTrials = int(x)
		if x < 1 || x > MaxSearchTrials {
			d.fail("spec.parallelTrials", sf["parallelTrials"], "must be 1..%d, got %d", MaxSearchTrials, x)
		}
	}
	if x, ok := d.integer("spec.seed", sf["seed"]); ok {
		plan.Seed = x
	}

	// parameters
	var params []paramDist
	if pn := sf["parameters"]; pn == nil {
		d.fail("spec.parameters", specNode, "is required (path: {uniform|logUniform|int: [lo, hi]} or {choice: [...]})")
	} else {
		pf := d.mappingFields("spec.parameters", pn)
		if len(pf) == 0 && pn.Kind == yaml.MappingNode {
			d.fail("spec.parameters", pn, "must name at least one parameter")
		}
		for _, path := range sortedNodeKeys(pf) {
			if p, ok := d.param("spec.parameters."+path, path, pf[path]); ok {
				params = append(params, p)
			}
		}
	}
	if err := d.errs.err(); err != nil {
		return nil, err
	}

	// trials
	var values [][]*yaml.Node
	switch plan.Algorithm {
	case AlgorithmGrid:
		values = d.grid(params, maxTrials)
	default:
		values = sampleTrials(params, maxTrials, plan.Seed)
	}
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	for i, vals := range values {
		t, err := trialSpec(plan, tmplSpec, params, vals, i)
		if err != nil {
			return nil, err
		}
		plan.Trials = append(plan.Trials, t)
	}
	return plan, nil
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

func dnsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// metricMaximized is the default spec.objective.mode of a metric: max for scores,
// min for losses and errors.
func metricMaximized(metric string) bool {
	m := strings.TrimPrefix(metric, "val_")
	switch {
	case strings.Contains(m, "loss"), strings.Contains(m, "rmse"), strings.Contains(m, "mae"),
		strings.Contains(m, "mape"), strings.Contains(m, "mse"), strings.Contains(m, "error"):
		return false
	}
	return true
}

func templateEpochs(tmpl *yaml.Node) int {
	if n := mappingValue(mappingValue(tmpl, "training"), "epochs"); n != nil {
		if v, err := strconv.Atoi(n.Value); err == nil {
			return v
		}
	}
	return DefaultEpochs
}

func sortedNodeKeys(m map[string]*yaml.Node) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// param decodes one parameter distribution.
func (d *searchDecoder) param(path, name string, n *yaml.Node) (paramDist, bool) {
	p := paramDist{path: name, line: n.Line}
	if strings.HasPrefix(name, "metadata.") || name == "" || strings.ContainsAny(name, "[] ") {
		d.fail(path, n, "must be a field path inside the TrainingJob spec, such as training.optimizer.learningRate")
		return p, false
	}
	f := d.mappingFields(path, n, "uniform", "logUniform", "int", "choice")
	if len(f) != 1 {
		if n.Kind == yaml.MappingNode && len(f) == len(n.Content)/2 {
			d.fail(path, n, "must be exactly one of uniform: [lo, hi], logUniform: [lo, hi], int: [lo, hi], choice: [...]")
		}
		return p, false
	}
	for kind, v := range f {
		p.kind = kind
		kp := path + "." + kind
		if v.Kind != yaml.SequenceNode {
			d.fail(kp, v, "must be a list, got %s", describe(v))
			return p, false
		}
		if kind == "choice" {
			if len(v.Content) == 0 {
				d.fail(kp, v, "must list at least one value")
				return p, false
			}
			p.choices = v.Content
			return p, true
		}
		if len(v.Content) != 2 {
			d.fail(kp, v, "must be [lo, hi], got %d values", len(v.Content))
			return p, false
		}
		if kind == "int" {
			lo, ok1 := d.integer(kp+"[0]", v.Content[0])
			hi, ok2 := d.integer(kp+"[1]", v.Content[1])
			if !ok1 || !ok2 {
				return p, false
			}
			if lo > hi {
				d.fail(kp, v, "lo (%d) must not be above hi (%d)", lo, hi)
				return p, false
			}
			p.ilo, p.ihi = lo, hi
			return p, true
		}
		lo, ok1 := d.number(kp+"[0]", v.Content[0])
		hi, ok2 := d.number(kp+"[1]", v.Content[1])
		if !ok1 || !ok2 {
			return p, false
		}
		if lo >= hi {
			d.fail(kp, v, "lo (%g) must be below hi (%g)", lo, hi)
			return p, false
		}
		if kind == "logUniform" && lo <= 0 {
			d.fail(kp, v, "lo must be above 0 for a log-uniform range, got %g", lo)
			return p, false
		}
		p.lo, p.hi = lo, hi
	}
	return p, true
}

// sampleTrials draws n trials' values from seed: one PCG stream, parameters in path
// order within a trial, trials in order. The same seed gives the same trials.
func sampleTrials(params []paramDist, n int, seed int64) [][]*yaml.Node {
	r := rand.New(rand.NewPCG(uint64(seed), 0x636f686f72742d73)) // "cohort-s"
	out := make([][]*yaml.Node, n)
	for i := range out {
		vals := make([]*yaml.Node, len(params))
		for j, p := range params {
			switch p.kind {
			case "uniform":
				vals[j] = floatNode(p.lo + r.Float64()*(p.hi-p.lo))
			case "logUniform":
				vals[j] = floatNode(math.Exp(math.Log(p.lo) + r.Float64()*(math.Log(p.hi)-math.Log(p.lo))))
			case "int":
				vals[j] = intNode(p.ilo + r.Int64N(p.ihi-p.ilo+1))
			case "choice":
				vals[j] = p.choices[r.IntN(len(p.choices))]
			}
		}
		out[i] = vals
	}
	return out
}

// grid enumerates every combination of choice and int parameters, the last parameter
// (in path order) varying fastest; at most maxTrials (0: all) of them.
func (d *searchDecoder) grid(params []paramDist, maxTrials int) [][]*yaml.Node {
	axes := make([][]*yaml.Node, len(params))
	total := 1
	for i, p := range params {
		switch p.kind {
		case "choice":
			axes[i] = p.choices
		case "int":
			if p.ihi-p.ilo >= MaxSearchTrials {
				d.fail("spec.parameters."+p.path+".int", nil, "a grid axis may have at most %d values", MaxSearchTrials)
				return nil
			}
			for v := p.ilo; v <= p.ihi; v++ {
				axes[i] = append(axes[i], intNode(v))
			}
		default:
			d.errs.add("spec.parameters."+p.path, p.line, "grid search needs choice or int values, not a %s range", p.kind)
			return nil
		}
		total *= len(axes[i])
		if total > MaxSearchTrials {
			d.errs.add("spec.parameters", 0, "the grid has more than %d combinations", MaxSearchTrials)
			return nil
		}
	}
	if maxTrials > 0 && maxTrials < total {
		total = maxTrials
	}
	out := make([][]*yaml.Node, total)
	for i := range out {
		vals := make([]*yaml.Node, len(params))
		k := i
		for j := len(params) - 1; j >= 0; j-- {
			vals[j] = axes[j][k%len(axes[j])]
			k /= len(axes[j])
		}
		out[i] = vals
	}
	return out
}

func floatNode(v float64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: strconv.FormatFloat(v, 'g', -1, 64)}
}

func intNode(v int64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v, 10)}
}

// nodeJSON renders a YAML value as JSON.
func nodeJSON(n *yaml.Node) string {
	var v any
	if err := n.Decode(&v); err != nil {
		return strconv.Quote(n.Value)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return strconv.Quote(n.Value)
	}
	return string(b)
}

// trialSpec builds and validates trial i's TrainingJob spec.
func trialSpec(plan *SearchPlan, tmpl *yaml.Node, params []paramDist, vals []*yaml.Node, i int) (TrialPlan, error) {
	spec := deepCopy(tmpl)
	t := TrialPlan{Index: i, Parameters: map[string]string{}}
	for j, p := range params {
		setPath(spec, strings.Split(p.path, "."), deepCopy(vals[j]))
		t.Parameters[p.path] = nodeJSON(vals[j])
	}
	if plan.Algorithm == AlgorithmASHA {
		setPath(spec, []string{"training", "epochs"}, intNode(int64(plan.MaxEpochs)))
	}
	name := fmt.Sprintf("%s-t%d", plan.Name, i)
	if len(name) > 63 {
		name = name[len(name)-63:]
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		strNode("apiVersion"), strNode(APIVersion),
		strNode("kind"), strNode(Kind),
		strNode("metadata"), {Kind: yaml.MappingNode, Content: []*yaml.Node{
			strNode("name"), strNode(name), strNode("namespace"), strNode(plan.Namespace),
		}},
		strNode("spec"), spec,
	}}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return t, fmt.Errorf("jobs: encode trial %d spec: %w", i, err)
	}
	t.Spec = buf.Bytes()
	if _, err := Parse(t.Spec); err != nil {
		var fes []FieldError
		if se, ok := err.(*SpecError); ok {
			for _, fe := range se.Errors {
				path := "spec.template." + strings.TrimPrefix(fe.Path, "spec.")
				for _, p := range params {
					if fe.Path == "spec."+p.path || strings.HasPrefix(fe.Path, "spec."+p.path+".") || strings.HasPrefix(fe.Path, "spec."+p.path+"[") {
						path = "spec.parameters." + p.path
					}
				}
				fes = append(fes, FieldError{Path: path, Message: fmt.Sprintf("trial %d %s: %s", i, paramsText(t.Parameters), fe.Message)})
			}
		} else {
			fes = append(fes, FieldError{Path: "spec.template", Message: fmt.Sprintf("trial %d: %v", i, err)})
		}
		return t, errorList(fes).err()
	}
	return t, nil
}

func paramsText(p map[string]string) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + p[k]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func deepCopy(n *yaml.Node) *yaml.Node {
	if n == nil {
		return &yaml.Node{Kind: yaml.MappingNode}
	}
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, k := range n.Content {
		c.Content[i] = deepCopy(k)
	}
	return &c
}

// setPath sets the field at path (creating mappings on the way) to v.
func setPath(n *yaml.Node, path []string, v *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != path[0] {
			continue
		}
		if len(path) == 1 {
			n.Content[i+1] = v
			return
		}
		child := n.Content[i+1]
		if child.Kind != yaml.MappingNode {
			child = &yaml.Node{Kind: yaml.MappingNode}
			n.Content[i+1] = child
		}
		setPath(child, path[1:], v)
		return
	}
	if len(path) == 1 {
		n.Content = append(n.Content, strNode(path[0]), v)
		return
	}
	child := &yaml.Node{Kind: yaml.MappingNode}
	n.Content = append(n.Content, strNode(path[0]), child)
	setPath(child, path[1:], v)
}
