package jobs

import (
	"strings"
	"testing"
)

// auditSpec appends text (spec-level keys, indented by two spaces) to baseSpec.
func auditSpec(t *testing.T, text string) string {
	return editSpec(t, edit{Line: 25, Text: text, Insert: true})
}

func TestParseAudit(t *testing.T) {
	j := mustParse(t, auditSpec(t, `  audit:
    sensitive: [Gender, MaritalStatus, Age]
    intersectional: true
    bins: {Age: [30, 40, 50]}
    gate: {minImpactRatio: 0.8, minAUC: 0.75}
  explain:
    permutation: {repeats: 3, seed: 7}`))
	a := j.Spec.Audit
	if a == nil {
		t.Fatal("spec.audit not decoded")
	}
	if strings.Join(a.Sensitive, ",") != "Gender,MaritalStatus,Age" || !a.Intersectional || a.UseAsFeatures {
		t.Errorf("audit = %+v", a)
	}
	if a.MinGroupFraction != DefaultMinGroupFraction || a.Threshold != DefaultAuditThreshold {
		t.Errorf("defaults: minGroupFraction %v threshold %v", a.MinGroupFraction, a.Threshold)
	}
	if a.Bootstrap != (Bootstrap{Resamples: DefaultBootstrapResamples, Seed: DefaultSeed}) {
		t.Errorf("bootstrap = %+v", a.Bootstrap)
	}
	if g := a.Gate; g == nil || g.MinImpactRatio == nil || *g.MinImpactRatio != 0.8 || g.MinAUC == nil || *g.MinAUC != 0.75 || g.MinAccuracy != nil || g.MaxRMSE != nil {
		t.Errorf("gate = %+v", a.Gate)
	}
	if e := j.Spec.Explain.Permutation; e != (Permutation{Repeats: 3, Seed: 7}) {
		t.Errorf("permutation = %+v", e)
	}
	if got := a.Bins["Age"]; len(got) != 3 || got[2] != 50 {
		t.Errorf("bins = %v", a.Bins)
	}
	assertRoundTrip(t, j)

	// An explicit 0 turns permutation importance off.
	j = mustParse(t, auditSpec(t, "  explain: {permutation: {repeats: 0}}"))
	if j.Spec.Explain.Permutation.Repeats != 0 {
		t.Errorf("repeats: 0 became %d", j.Spec.Explain.Permutation.Repeats)
	}
	// A CNN gets integrated-gradients defaults; an MLP none.
	if ig := mustParse(t, baseSpec).Spec.Explain.IntegratedGradients; ig != (IntegratedGradients{}) {
		t.Errorf("mlp integratedGradients = %+v", ig)
	}
}

func TestParseAuditErrors(t *testing.T) {
	tests := []struct {
		name, text, wantPath string
		wantLine             int
		wantMsg              string
	}{
		{"no sensitive", "  audit: {intersectional: true}", "spec.audit.sensitive", 26, "at least one column"},
		{"label is sensitive", "  audit: {sensitive: [Gender, Attrition]}", "spec.audit.sensitive[1]", 26, "label column"},
		{"duplicate sensitive", "  audit:\n    sensitive: [Gender, Gender]", "spec.audit.sensitive[1]", 27, `duplicate "Gender"`},
		{"unknown field", "  audit: {sensitive: [Gender], treshold: 0.4}", "spec.audit.treshold", 26, `did you mean "threshold"`},
		{"threshold range", "  audit: {sensitive: [Gender], threshold: 1}", "spec.audit.threshold", 26, "between 0 and 1"},
		{"min group fraction", "  audit: {sensitive: [Gender], minGroupFraction: 0.6}", "spec.audit.minGroupFraction", 26, "[0, 0.5)"},
		{"empty gate", "  audit: {sensitive: [Gender], gate: {}}", "spec.audit.gate", 26, "sets no figure"},
		{"impact ratio range", "  audit:\n    sensitive: [Gender]\n    gate: {minImpactRatio: 1.2}", "spec.audit.gate.minImpactRatio", 28, "at most 1"},
		{"impact ratio type", "  audit:\n    sensitive: [Gender]\n    gate: {minImpactRatio: high}", "spec.audit.gate.minImpactRatio", 28, "expected a number"},
		{"rmse on binary", "  audit:\n    sensitive: [Gender]\n    gate: {maxRMSE: 3}", "spec.audit.gate.maxRMSE", 28, "only to task regression"},
		{"bins not sensitive", "  audit:\n    sensitive: [Gender]\n    bins: {Age: [30]}", "spec.audit.bins.Age", 28, "not one of spec.audit.sensitive"},
		{"bins not increasing", "  audit:\n    sensitive: [Age]\n    bins: {Age: [30, 30]}", "spec.audit.bins.Age[1]", 28, "strictly increasing"},
		{"bins wrong type", "  audit:\n    sensitive: [Age]\n    bins: {Age: 30}", "spec.audit.bins.Age", 28, "expected a list of numbers"},
		{"too many sensitive", "  audit: {sensitive: [a, b, c, d, e, f, g]}", "spec.audit.sensitive", 26, "at most 6"},
		{"repeats range", "  explain: {permutation: {repeats: 101}}", "spec.explain.permutation.repeats", 26, "at most 100"},
		{"integrated gradients on mlp", "  explain: {integratedGradients: {steps: 16}}", "spec.explain.integratedGradients", 26, "only to a cnn"},
		{"resamples range", "  audit: {sensitive: [Gender], bootstrap: {resamples: -1}}", "spec.audit.bootstrap.resamples", 26, "between 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertOneProblem(t, auditSpec(t, tt.text), tt.wantPath, tt.wantLine, tt.wantMsg)
		})
	}
}

func TestParseAuditTaskRules(t *testing.T) {
	regression := func(text string) string {
		return editSpec(t, edit{Line: 6, Text: "  task: regression"}, edit{Line: 25, Text: text, Insert: true})
	}
	_, err := Parse([]byte(regression("  audit:\n    sensitive: [Gender]\n    gate: {minAUC: 0.7}")))
	if errs := specErrors(t, err); len(errs) != 1 || errs[0].Path != "spec.audit.gate.minAUC" {
		t.Errorf("minAUC on regression: %v", err)
	}
	mustParse(t, regression("  audit:\n    sensitive: [Gender]\n    gate: {minImpactRatio: 0.8, maxRMSE: 2.5}"))
	cnn := editSpec(t, edit{Line: 8, Text: "    cnn: {conv: [{filters: 4, kernel: 3}]}"}, edit{Line: 9, Text: ""}, edit{Line: 12, Text: ""},
		edit{Line: 25, Text: "  audit: {sensitive: [Gender]}", Insert: true})
	_, err = Parse([]byte(cnn))
	if errs := specErrors(t, err); len(errs) != 1 || errs[0].Path != "spec.audit" || !strings.Contains(errs[0].Message, "only to tabular") {
		t.Errorf("audit on cnn: %v", err)
	}
}
