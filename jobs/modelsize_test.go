package jobs

import (
	"errors"
	"strings"
	"testing"
)

// TestModelSizeLimits is the regression test of security issue #16: a spec with
// hidden: [65536, 65536, 65536] was accepted at submission and failed on every
// worker; Validate now refuses models over MaxParams (and batches over MaxActivations)
// whatever the data, naming the field.
func TestModelSizeLimits(t *testing.T) {
	const batch16 = "    batchSize: 16"
	lstm := func(hidden, dense string) []edit {
		return []edit{
			{Line: 8, Text: "    lstm:"},
			{Line: 9, Text: "      hidden: " + hidden + "\n      dense: " + dense},
			{Line: 12, Text: "    sequence_csv: {lookback: 12, horizon: 1, target: y}"},
		}
	}
	cnn := func(conv, dense string) []edit {
		return []edit{
			{Line: 8, Text: "    cnn:"},
			{Line: 9, Text: "      conv: " + conv + "\n      dense: " + dense},
			{Line: 12, Text: ""},
		}
	}
	tests := []struct {
		name  string
		edits []edit
		path  string // "" accepts
		inMsg string
	}{
		{name: "issue example", edits: []edit{{Line: 9, Text: "      hidden: [65536, 65536, 65536]"}}, path: "spec.model.mlp.hidden", inMsg: "at least 8590262273 parameters, more than the limit of 134217728"},
		{name: "two wide layers", edits: []edit{{Line: 9, Text: "      hidden: [16384, 16384]"}}, path: "spec.model.mlp.hidden"},
		{name: "wide but within the limit", edits: []edit{{Line: 9, Text: "      hidden: [8192, 8192]"}, {Line: 14, Text: batch16, Insert: true}}},
		{name: "one very wide layer", edits: []edit{{Line: 9, Text: "      hidden: [65536]"}, {Line: 14, Text: batch16, Insert: true}}},
		{name: "batch times widest layer", edits: []edit{{Line: 9, Text: "      hidden: [65536]"}, {Line: 14, Text: "    batchSize: 1025", Insert: true}}, path: "spec.training.batchSize", inMsg: "exceed the limit of 67108864"},
		{name: "batch at the activation limit", edits: []edit{{Line: 9, Text: "      hidden: [1024]"}, {Line: 14, Text: "    batchSize: 65536", Insert: true}}},
		{name: "lstm over", edits: lstm("[8192]", "[]"), path: "spec.model.lstm.hidden"},
		{name: "lstm dense over", edits: lstm("[64]", "[65536, 65536]"), path: "spec.model.lstm.dense"},
		{name: "lstm within", edits: append(lstm("[1024, 1024]", "[64]"), edit{Line: 14, Text: batch16, Insert: true})},
		{name: "lstm unrolled activations", edits: append(lstm("[4096]", "[]"), edit{Line: 14, Text: "    batchSize: 256", Insert: true}), path: "spec.training.batchSize"},
		{name: "cnn conv over", edits: cnn("[{filters: 4096, kernel: 3}, {filters: 4096, kernel: 3}]", "[]"), path: "spec.model.cnn.conv"},
		{name: "cnn dense over", edits: cnn("[{filters: 16, kernel: 3}]", "[65536, 65536]"), path: "spec.model.cnn.dense"},
		{name: "cnn within", edits: append(cnn("[{filters: 32, kernel: 3}, {filters: 64, kernel: 3}]", "[128]"), edit{Line: 14, Text: batch16, Insert: true})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(editSpec(t, tc.edits...)))
			if tc.path == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %v, want a *SpecError", err)
			}
			for _, fe := range se.Errors {
				if fe.Path == tc.path && strings.Contains(fe.Message, tc.inMsg) {
					return
				}
			}
			t.Fatalf("errors %v, want one at %s containing %q", err, tc.path, tc.inMsg)
		})
	}
}
