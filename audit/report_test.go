package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// fixtureReport is the fixture's report with the parts the caller fills.
func fixtureReport(t testing.TB) *Report {
	t.Helper()
	cfg, in := fixture()
	cfg.Intersectional = true
	cfg.Gate = GateConfig{MinImpactRatio: ptr(0.8)}
	rep, err := Evaluate(cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	rep.JobID, rep.Name = "attrition-mlp-1a2b3c4d", "attrition-mlp"
	rep.Model = ModelInfo{Kind: "mlp", Step: 2250, Checkpoint: "file:///jobs/x/manifest.json"}
	rep.ImportanceMetric = "auc"
	rep.Importance = []Importance{{Feature: "OverTime", Mean: 0.061, Std: 0.008}}
	rep.Explain = &Explain{Permutation: &PermutationInfo{Repeats: 5, Seed: 1}}
	rep.Audit.Gate.Override = &GateOverride{By: "alice", Reason: "reviewed by HR legal", Time: "2026-12-07T10:00:00Z"}
	return rep
}

func TestReportJSON(t *testing.T) {
	rep := fixtureReport(t)
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("round trip", func(t *testing.T) {
		var file bytes.Buffer
		if err := EncodeReport(&file, rep); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(file.String(), `"reason": "8.3% of rows < minGroupFraction 10%"`) {
			t.Errorf("EncodeReport escapes HTML or does not indent:\n%s", file.String())
		}
		got, err := DecodeReport(&file)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(got)
		if !bytes.Equal(again, data) {
			t.Errorf("round trip changed the report:\n%s\n%s", data, again)
		}
	})
	t.Run("field names", func(t *testing.T) {
		s := string(data)
		for _, want := range []string{`"format_version":1`, `"job_id":`, `"model":{"kind":"mlp","step":2250,`,
			`"val_auc":{"value":0.8,"ci95":[`, `"bootstrap":{"resamples":200,"seed":1}`, `"mean_predicted":`,
			`"fraction_positive":`, `"ece":`, `"confusion":{"threshold":0.5,"labels":["No","Yes"],"matrix":[[3,2],[2,5]]}`,
			`"min_group_fraction":0.1`, `"selection_rate":`, `"impact_ratio":0.75`, `"score_impact_ratio":`,
			`"tpr":`, `"fpr":`, `"base_rate":`, `"excluded":false`, `"missing":true`, `"importance_metric":"auc"`,
			`"explain":{"permutation":{"repeats":5,"seed":1}}`, `"override":{"by":"alice",`} {
			if !strings.Contains(s, want) {
				t.Errorf("report JSON lacks %s", want)
			}
		}
		for _, bad := range []string{"NaN", "Inf", `"tpr":null`, `"impact_ratio":null`} {
			if strings.Contains(s, bad) {
				t.Errorf("report JSON contains %s", bad)
			}
		}
	})
}

func TestEncodeReportVersion(t *testing.T) {
	if err := EncodeReport(&bytes.Buffer{}, &Report{}); err == nil || !strings.Contains(err.Error(), "format_version 0") {
		t.Errorf("EncodeReport of a version-0 report: %v", err)
	}
}

func TestDecodeReportStrict(t *testing.T) {
	valid := `{"format_version":1,"job_id":"j","name":"n","task":"regression","model":{"kind":"mlp","step":1},"split":"test","rows":1,"metrics":{}}`
	for _, c := range []struct {
		name, data, want string
	}{
		{"valid", valid, ""},
		{"valid with trailing space", valid + "\n\t ", ""},
		{"unknown field", strings.Replace(valid, `"rows":1`, `"rows":1,"extra":2`, 1), `unknown field "extra"`},
		{"unknown nested field", strings.Replace(valid, `"step":1`, `"step":1,"epoch":3`, 1), `unknown field "epoch"`},
		{"trailing data", valid + `{}`, "data after the report"},
		{"trailing garbage", valid + `x`, "data after the report"},
		{"wrong version", strings.Replace(valid, `"format_version":1`, `"format_version":2`, 1), "format_version 2, want 1"},
		{"no version", `{}`, "format_version 0, want 1"},
		{"null", `null`, "format_version 0"},
		{"empty", ``, "EOF"},
		{"bad override time", strings.Replace(valid, `"metrics":{}`, `"metrics":{},"audit":{"split":"test","sensitive":[],"min_group_fraction":0,"groups":[],"gate":{"passed":true,"override":{"by":"a","reason":"r","time":"yesterday"}}}`, 1), `override time "yesterday"`},
		{"bad time in overrides", strings.Replace(valid, `"metrics":{}`, `"metrics":{},"audit":{"split":"test","sensitive":[],"min_group_fraction":0,"groups":[],"gate":{"passed":false,"override":{"by":"a","reason":"r","time":"2026-12-07T10:00:00Z"},"overrides":[{"by":"a","reason":"r","time":"2026-12-07"},{"by":"a","reason":"r","time":"2026-12-07T10:00:00Z"}]}}`, 1), `override time "2026-12-07"`},
		{"too large", valid + strings.Repeat(" ", MaxReportSize), "larger than 16777216 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := DecodeReport(strings.NewReader(c.data))
			switch {
			case c.want == "" && err != nil:
				t.Errorf("error %v", err)
			case c.want == "" && rep.Rows != 1:
				t.Errorf("report %+v", rep)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// FuzzDecodeReport checks that DecodeReport never panics and that what it accepts
// encodes to a report it accepts again, unchanged by one more round trip. Its seeds are
// in testdata/fuzz/FuzzDecodeReport (a full report, a minimal one, an LSTM's and a
// CNN's parts, and rejected variants), plus the fixture's report.
func FuzzDecodeReport(f *testing.F) {
	data, err := json.Marshal(fixtureReport(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := DecodeReport(bytes.NewReader(data))
		if err != nil {
			return
		}
		first, err := json.Marshal(rep)
		if err != nil {
			t.Fatalf("marshal an accepted report: %v", err)
		}
		again, err := DecodeReport(bytes.NewReader(first))
		if err != nil {
			t.Fatalf("re-decode %s: %v", first, err)
		}
		second, _ := json.Marshal(again)
		if !bytes.Equal(first, second) {
			t.Fatalf("round trip changed the report:\n%s\n%s", first, second)
		}
	})
}
