package jobs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parse decodes one YAML TrainingJob document, applies the defaults and validates the result.
//
// Parsing is strict: an unknown or duplicate field, a value of the wrong type, a null where a
// value is required (data.test and the model kinds may be null, meaning none), an anchor
// alias, more than one document and every invalid value are reported. All problems are
// reported at once; the error is then a *SpecError whose FieldErrors name the field path and
// line. Data longer than MaxSpecBytes is refused without being read.
func Parse(data []byte) (*TrainingJob, error) {
	if len(data) > MaxSpecBytes {
		return nil, errorList{{Message: fmt.Sprintf("spec is %d bytes; the limit is %d", len(data), MaxSpecBytes)}}.err()
	}
	root, fe := decodeDocument(data)
	if fe != nil {
		return nil, errorList{*fe}.err()
	}

	job := &TrainingJob{}
	d := &decoder{lines: map[string]int{"": root.Line}, failed: map[string]bool{}}
	d.value("", root, reflect.ValueOf(job).Elem(), false)
	job.lines = d.lines
	// A field that failed to decode counts as not set, so it gets its default and
	// validation does not report it a second time.
	job.applyDefaults(func(path string) bool {
		_, ok := d.lines[path]
		return ok && !d.failed[path]
	})

	errs := d.errs
	for _, fe := range job.validate() {
		if !d.coveredByFailure(fe.Path) {
			errs = append(errs, fe)
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return job, nil
}

var (
	yamlLineRE = regexp.MustCompile(`line (\d+)`)
	// bigIntRE matches integers too large for int64, which YAML resolves as floats.
	bigIntRE = regexp.MustCompile(`^[-+]?[0-9]+$`)
)

// decodeDocument reads exactly one YAML document and returns its top node.
func decodeDocument(data []byte) (root *yaml.Node, fe *FieldError) {
	defer func() {
		// yaml.v3 is not supposed to panic on any input; if it does, that is bad input.
		if r := recover(); r != nil {
			root, fe = nil, &FieldError{Message: fmt.Sprintf("malformed YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{Message: "spec is empty"}
		}
		return nil, yamlError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(err)
	default:
		return nil, &FieldError{Line: next.Line, Message: "more than one YAML document; a spec file holds exactly one TrainingJob"}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &FieldError{Line: doc.Line, Message: "spec is empty"}
	}
	return doc.Content[0], nil
}

// yamlError turns a yaml.v3 syntax error into a FieldError carrying its line.
func yamlError(err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	fe := &FieldError{Message: "malformed YAML: " + msg}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		if n, convErr := strconv.Atoi(m[1]); convErr == nil {
			fe.Line = n
			fe.Message = "malformed YAML: " + strings.TrimPrefix(msg, m[0]+": ")
		}
	}
	return fe
}

// decoder walks a yaml.Node tree against the Go types by reflection, using their yaml tags.
type decoder struct {
	lines  map[string]int  // path -> line of every field and list item seen
	failed map[string]bool // paths whose value could not be decoded
	errs   errorList
}

func (d *decoder) fail(path string, line int, format string, args ...any) {
	d.failed[path] = true
	d.errs.add(path, line, format, args...)
}

// coveredByFailure reports whether path is, or is inside, a field that failed to decode, so
// that validation does not report a second problem for it.
func (d *decoder) coveredByFailure(path string) bool {
	for p := path; ; {
		if d.failed[p] {
			return true
		}
		if p == "" {
			return false
		}
		p = parentPath(p)
	}
}

// parentPath returns the path of the field or list holding path ("" at the top).
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func joinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// value decodes n into v. path is v's field path; nullable says whether null is allowed
// (meaning: leave the zero value).
func (d *decoder) value(path string, n *yaml.Node, v reflect.Value, nullable bool) {
	if n.Kind == yaml.AliasNode {
		d.fail(path, n.Line, "aliases (*%s) are not supported; write the value out", n.Value)
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		if nullable || v.Kind() == reflect.Pointer {
			return
		}
		d.fail(path, n.Line, "must not be null; expected %s (omit the field to use its default)", expected(v.Type()))
		return
	}
	if nd, ok := nodeDecoderOf(v); ok {
		nd.decodeNode(d, path, n)
		return
	}
	if sf, ok := scalarFormOf(v); ok && n.Kind == yaml.ScalarNode {
		if n.ShortTag() != "!!str" {
			d.wrongType(path, n, v.Type())
			return
		}
		// The short form sets one field explicitly (so an empty one gets no default).
		d.lines[joinPath(path, sf.setScalar(n.Value))] = n.Line
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		elem := reflect.New(v.Type().Elem())
		if v.Type().Elem().Kind() != reflect.Struct {
			// An optional scalar (spec.audit.gate.minAUC): set only when given.
			d.value(path, n, elem.Elem(), false)
			v.Set(elem)
			return
		}
		if _, short := scalarFormOf(elem.Elem()); !short && (n.Kind != yaml.MappingNode || n.ShortTag() != "!!map") {
			d.wrongType(path, n, v.Type())
			return
		}
		v.Set(elem)
		// The struct case reads the mapping, or a short form (export.threshold.optimize).
		d.value(path, n, elem.Elem(), false)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode || n.ShortTag() != "!!map" {
			d.wrongType(path, n, v.Type())
			return
		}
		d.mapping(path, n, v)
	case reflect.Map:
		// Only string-keyed maps (spec.placement.nodeSelector); keys are any scalar text.
		if n.Kind != yaml.MappingNode || n.ShortTag() != "!!map" || v.Type().Key().Kind() != reflect.String {
			d.wrongType(path, n, v.Type())
			return
		}
		if len(n.Content) == 0 {
			v.SetZero()
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		seen := make(map[string]int, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || !plainScalarTag(k.ShortTag()) {
				d.fail(path, k.Line, "keys must be strings, got %s", describe(k))
				continue
			}
			child := joinPath(path, k.Value)
			if first, dup := seen[k.Value]; dup {
				d.fail(child, k.Line, "duplicate key %q (first set on line %d)", k.Value, first)
				continue
			}
			seen[k.Value] = k.Line
			d.lines[child] = k.Line
			ev := reflect.New(v.Type().Elem()).Elem()
			d.value(child, val, ev, false)
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), ev)
		}
		v.Set(m)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode || n.ShortTag() != "!!seq" {
			d.wrongType(path, n, v.Type())
			return
		}
		if len(n.Content) == 0 {
			// An empty list decodes to nil, as an absent one, so that specs round-trip.
			v.SetZero()
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			d.value(p, item, s.Index(i), false)
		}
		v.Set(s)
	case reflect.String:
		// Any scalar is accepted as its literal text, so that label values such as 1 or
		// true need no quotes.
		if n.Kind != yaml.ScalarNode || !plainScalarTag(n.ShortTag()) {
			d.wrongType(path, n, v.Type())
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && bigIntRE.MatchString(n.Value) {
			d.fail(path, n.Line, "integer %s is out of range", n.Value)
			return
		}
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.wrongType(path, n, v.Type())
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			d.fail(path, n.Line, "integer %s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!float" && n.ShortTag() != "!!int") {
			d.wrongType(path, n, v.Type())
			return
		}
		var f float64
		if err := n.Decode(&f); err != nil {
			d.fail(path, n.Line, "number %s is out of range", n.Value)
			return
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(path, n.Line, "must be a finite number, got %s", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.wrongType(path, n, v.Type())
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.wrongType(path, n, v.Type())
			return
		}
		v.SetBool(b)
	default:
		// Unreachable for the spec types; reported rather than panicking.
		d.fail(path, n.Line, "field of Go type %s cannot be decoded", v.Type())
	}
}

// scalarForm is implemented by spec types that may also be written as one string, the
// short form of their mapping (checkpoint.scoreBy: val_loss for {metric: val_loss}).
type scalarForm interface {
	// setScalar sets the field the short form stands for and returns its yaml name.
	setScalar(string) string
	// scalarShape names both forms in type errors.
	scalarShape() string
}

// scalarFormOf returns v as a scalarForm when its type has a short form.
func scalarFormOf(v reflect.Value) (scalarForm, bool) {
	if !v.CanAddr() {
		return nil, false
	}
	sf, ok := v.Addr().Interface().(scalarForm)
	return sf, ok
}

// plainScalarTag reports whether a scalar with this tag can be read as text.
func plainScalarTag(tag string) bool {
	switch tag {
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		return true
	}
	return false
}

// mapping decodes a mapping node into the struct v.
func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) {
	fields := structFields(v.Type())
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			d.errs.add(path, k.Line, "merge keys (<<) are not supported; write the fields out")
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			d.errs.add(path, k.Line, "field names must be strings, got %s", describe(k))
			continue
		}
		child := joinPath(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(child, k.Line, "duplicate field %q (first set on line %d)", k.Value, first)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fields[k.Value]
		if !ok {
			d.fail(child, k.Line, "unknown field %q%s", k.Value, suggest(k.Value, fields))
			continue
		}
		d.lines[child] = k.Line
		d.value(child, val, v.Field(f.index), f.nullable)
	}
}

type fieldInfo struct {
	index    int
	nullable bool
}

// structFields maps the yaml names of t's exported fields to their index.
func structFields(t reflect.Type) map[string]fieldInfo {
	out := make(map[string]fieldInfo, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out[name] = fieldInfo{index: i, nullable: sf.Tag.Get("jobs") == "nullable"}
	}
	return out
}

// suggest returns ` (did you mean "x"?)` for the known field closest to name, or "".
func suggest(name string, fields map[string]fieldInfo) string {
	return DidYouMean(name, slices.Collect(maps.Keys(fields)))
}

// DidYouMean returns ` (did you mean "x"?)` for the option closest to name (ignoring
// case, '_' and '-'; at most 2 edits, and at most half of name), or "".
func DidYouMean(name string, options []string) string {
	best, bestDist := "", 3
	norm := func(s string) string {
		return strings.ToLower(strings.ReplaceAll(strings.ReplaceAll(s, "_", ""), "-", ""))
	}
	for _, f := range options {
		dist := editDistance(norm(name), norm(f))
		if dist < bestDist || (dist == bestDist && best != "" && f < best) {
			best, bestDist = f, dist
		}
	}
	if best == "" || (bestDist > len(name)/2 && bestDist > 0) {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) wrongType(path string, n *yaml.Node, t reflect.Type) {
	d.fail(path, n.Line, "expected %s, got %s", expected(t), describe(n))
}

// expected names the YAML shape a Go type is read from.
func expected(t reflect.Type) string {
	if sf, ok := reflect.New(t).Interface().(scalarForm); ok {
		return sf.scalarShape()
	}
	switch t.Kind() {
	case reflect.Pointer:
		if t.Elem().Kind() != reflect.Struct {
			return expected(t.Elem())
		}
		return "a mapping"
	case reflect.Struct:
		return "a mapping"
	case reflect.Map:
		if t.Elem().Kind() == reflect.Slice {
			return "a mapping of lists of " + strings.TrimPrefix(expected(t.Elem()), "a list of ")
		}
		return "a mapping of " + strings.TrimPrefix(strings.TrimPrefix(expected(t.Elem()), "a "), "an ") + "s"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(expected(t.Elem()), "a "), "an ") + "s"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "a boolean (true or false)"
	}
	return t.String()
}

// describe names what a node holds, for "got ..." messages.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode && n.ShortTag() == "!!map":
		return "a mapping"
	case n.Kind == yaml.SequenceNode && n.ShortTag() == "!!seq":
		return "a list"
	case n.Kind == yaml.AliasNode:
		return "an alias"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("the string %q", v)
	case "!!int":
		return "the integer " + v
	case "!!float":
		return "the number " + v
	case "!!bool":
		return "the boolean " + v
	case "!!null":
		return "null"
	case "!!timestamp":
		return "the timestamp " + v
	}
	return fmt.Sprintf("a value tagged %s", n.ShortTag())
}
