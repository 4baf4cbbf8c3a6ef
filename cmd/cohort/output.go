package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// yamlOutput is set by -o yaml. Every verb prints structured output through printJSON
// and checks for "json"; -o yaml is normalised to "json" before a verb runs and
// printJSON then writes YAML, so each verb supports it without its own branch.
var yamlOutput bool

// normalizeOutput validates -o and turns yaml into json plus yamlOutput.
// It is idempotent: g remembers that yaml was asked for.
func normalizeOutput(g *globalFlags) error {
	switch g.output {
	case "table", "json":
	case "yaml":
		g.yaml, g.output = true, "json"
	default:
		return usageErr("-o/--output: %q is not one of table, json, yaml", g.output)
	}
	yamlOutput = g.yaml
	return nil
}

// printJSON writes v as one line of JSON, or as a YAML document with -o yaml (keys in
// the JSON order).
func printJSON(w io.Writer, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // a terminal or a script reads it, not a browser: keep "<" as is
	if err := enc.Encode(v); err != nil {
		return err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if !yamlOutput {
		_, err := fmt.Fprintln(w, string(b))
		return err
	}
	out, err := jsonToYAML(b)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(w, "---\n"+string(out))
	return err
}

// jsonToYAML re-encodes a JSON document as block-style YAML. JSON is YAML, so the
// parser keeps the key order; only the flow style it records has to be cleared.
func jsonToYAML(b []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	var clear func(*yaml.Node)
	clear = func(n *yaml.Node) {
		n.Style &^= yaml.FlowStyle
		if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
			n.Style &^= yaml.DoubleQuotedStyle
		}
		for _, c := range n.Content {
			clear(c)
		}
	}
	clear(&n)
	return yaml.Marshal(&n)
}

// humanRate formats a per-second rate for a table: "842", "12.3k", "1.05M".
func humanRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// humanCPU formats millicores for a table: "500m", "2", "1.5".
func humanCPU(m int64) string {
	if m%1000 == 0 {
		return fmt.Sprintf("%d", m/1000)
	}
	if m < 1000 {
		return fmt.Sprintf("%dm", m)
	}
	return fmt.Sprintf("%g", float64(m)/1000)
}
