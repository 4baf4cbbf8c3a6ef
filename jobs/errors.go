package jobs

import (
	"fmt"
	"sort"
	"strings"
)

// FieldError is one problem in a spec: the field's path ("spec.resources.workers.count",
// "spec.model.mlp.hidden[1]"; empty for the document as a whole), the 1-based line it is on
// (0 when unknown, for example for a job built in Go code) and what is wrong.
type FieldError struct {
	Path    string `json:"path"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

// Error formats the problem as "PATH (line N): MESSAGE", leaving out what is unknown.
func (e FieldError) Error() string {
	switch {
	case e.Path != "" && e.Line > 0:
		return fmt.Sprintf("%s (line %d): %s", e.Path, e.Line, e.Message)
	case e.Path != "":
		return e.Path + ": " + e.Message
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Message)
	default:
		return e.Message
	}
}

// SpecError holds every problem found in a spec, ordered by line.
type SpecError struct {
	Errors []FieldError `json:"errors"`
}

// Error lists the problems, one per line.
func (e *SpecError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// errorList collects FieldErrors while a spec is decoded or validated.
type errorList []FieldError

func (l *errorList) add(path string, line int, format string, args ...any) {
	*l = append(*l, FieldError{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

// err returns the collected problems as a *SpecError sorted by line (problems without a line
// last), or nil when there are none.
func (l errorList) err() error {
	if len(l) == 0 {
		return nil
	}
	out := append([]FieldError(nil), l...)
	key := func(fe FieldError) int {
		if fe.Line <= 0 {
			return int(^uint(0) >> 1)
		}
		return fe.Line
	}
	sort.SliceStable(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	return &SpecError{Errors: out}
}
