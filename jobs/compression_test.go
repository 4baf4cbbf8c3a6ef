package jobs

import (
	"strings"
	"testing"
)

// TestCompressionValid parses the two documented forms of training.compression (and
// fp16 with error feedback) into the spec.
func TestCompressionValid(t *testing.T) {
	for _, tc := range []struct {
		text string
		want Compression
	}{
		{"    compression: {fp16: true}", Compression{FP16: true}},
		{"    compression: {topK: 0.01, errorFeedback: true}", Compression{TopK: 0.01, ErrorFeedback: true}},
		{"    compression: {topK: 1}", Compression{TopK: 1}},
		{"    compression: {fp16: true, errorFeedback: true}", Compression{FP16: true, ErrorFeedback: true}},
	} {
		j := mustParse(t, editSpec(t, edit{Line: 16, Text: tc.text, Insert: true}))
		if got := j.Spec.Training.Compression; got == nil || *got != tc.want {
			t.Errorf("%s: parsed %+v, want %+v", tc.text, got, tc.want)
		}
	}
	if j := mustParse(t, baseSpec); j.Spec.Training.Compression != nil {
		t.Errorf("no compression in the spec parsed as %+v", j.Spec.Training.Compression)
	}
}

// TestCompressionErrors checks that each bad training.compression is refused with an
// error naming the field, its line and the problem.
func TestCompressionErrors(t *testing.T) {
	for _, tc := range []struct {
		text, path, msg string
	}{
		{"    compression: {topK: 0}", "spec.training.compression", "compresses nothing"},
		{"    compression: {topK: -0.1}", "spec.training.compression.topK", "greater than 0 and at most 1"},
		{"    compression: {topK: 1.5}", "spec.training.compression.topK", "got 1.5"},
		{"    compression: {topK: .nan}", "spec.training.compression.topK", "finite"},
		{"    compression: {fp16: true, topK: 0.01}", "spec.training.compression", "either fp16 or topK"},
		{"    compression: {errorFeedback: true}", "spec.training.compression.errorFeedback", "needs topK"},
		{"    compression: {}", "spec.training.compression", "compresses nothing"},
		{"    compression: {topk: 0.01}", "spec.training.compression.topk", ""},
	} {
		t.Run(tc.text, func(t *testing.T) {
			_, err := Parse([]byte(editSpec(t, edit{Line: 16, Text: tc.text, Insert: true})))
			errs := specErrors(t, err)
			for _, e := range errs {
				if strings.HasPrefix(e.Path, tc.path) && strings.Contains(e.Message, tc.msg) {
					if e.Line != 17 {
						t.Errorf("%s: line %d, want 17", e.Path, e.Line)
					}
					return
				}
			}
			t.Fatalf("no error at %s containing %q: %v", tc.path, tc.msg, err)
		})
	}
}

// editSpecText inserts text after line (1-based) of spec, for seeds built outside a
// test.
func editSpecText(spec string, line int, text string) string {
	lines := strings.Split(strings.TrimSuffix(spec, "\n"), "\n")
	lines = append(lines[:line], append([]string{text}, lines[line:]...)...)
	return strings.Join(lines, "\n") + "\n"
}
