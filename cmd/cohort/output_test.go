package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestYAMLOutputMatchesJSON(t *testing.T) {
	res := jobResult{JobID: "attrition-mlp-1", Status: "succeeded", Metrics: map[string]float64{"val_auc": 0.8057, "val_loss": 0.39},
		Checkpoint: "file:///tmp/x/manifest.json", Exports: []string{"a: b", "yes", "007"}}
	var jsonOut, yamlOut bytes.Buffer
	if err := printJSON(&jsonOut, res); err != nil {
		t.Fatal(err)
	}
	yamlOutput = true
	defer func() { yamlOutput = false }()
	if err := printJSON(&yamlOut, res); err != nil {
		t.Fatal(err)
	}
	out := yamlOut.String()
	if strings.Contains(out, "{") || !strings.HasPrefix(out, "---\njob_id: attrition-mlp-1\nstatus: succeeded\n") {
		t.Fatalf("YAML is not block style in the JSON key order:\n%s", out)
	}
	// The same document: strings that look like other YAML types ("yes", "007",
	// "a: b") stay strings.
	var fromJSON, fromYAML any
	if err := json.Unmarshal(jsonOut.Bytes(), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(yamlOut.Bytes(), &fromYAML); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalizeNumbers(fromJSON), normalizeNumbers(fromYAML)) {
		t.Fatalf("YAML %v differs from JSON %v", fromYAML, fromJSON)
	}
}

// normalizeNumbers makes YAML's ints and JSON's float64s comparable.
func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
	case int:
		return float64(x)
	}
	return v
}

func TestNormalizeOutput(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		yaml     bool
		bad      bool
	}{
		{"table", "table", false, false}, {"json", "json", false, false}, {"yaml", "json", true, false}, {"xml", "", false, true},
	} {
		yamlOutput = false
		g := &globalFlags{output: tc.in}
		err := normalizeOutput(g)
		if (err != nil) != tc.bad {
			t.Fatalf("%s: err %v", tc.in, err)
		}
		if !tc.bad && (g.output != tc.want || yamlOutput != tc.yaml) {
			t.Errorf("%s: output %q yaml %v", tc.in, g.output, yamlOutput)
		}
		// A second call (a verb's own check after the root's) changes nothing.
		if !tc.bad {
			if err := normalizeOutput(g); err != nil || g.output != tc.want || yamlOutput != tc.yaml {
				t.Errorf("%s: second normalisation: %v, output %q yaml %v", tc.in, err, g.output, yamlOutput)
			}
		}
	}
	yamlOutput = false
}
