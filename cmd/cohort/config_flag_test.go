package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestConfigFlag checks --config FILE: it replaces the default config file, the command
// line and the environment still win over it, and a bad FILE is bad input.
func TestConfigFlag(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	named := write("named.yaml", "address: 10.0.0.1:7070\noutput: json\n")
	partial := write("partial.yaml", "address: 10.0.0.3:7070\n")
	bad := write("bad.yaml", "adress: 10.0.0.1:7070\n")
	// The default file (under XDG_CONFIG_HOME) says something else.
	write("xdg/cohort/config.yaml", "address: 10.0.0.2:7070\noutput: yaml\n")
	brokenXDG := filepath.Join(dir, "broken")
	write("broken/cohort/config.yaml", "output: xml\n")

	for _, tc := range []struct {
		name, xdg, envAddr string
		args               []string
		wantAddr, wantOut  string
		wantErr            string
	}{
		{name: "named file beats the default file", args: []string{"--config", named},
			wantAddr: "10.0.0.1:7070", wantOut: "json"},
		{name: "fields the named file lacks take built-in defaults", args: []string{"--config", partial},
			wantAddr: "10.0.0.3:7070", wantOut: "table"},
		{name: "flags beat the named file", args: []string{"--config", named, "--address", "10.0.0.9:7070", "-o", "table"},
			wantAddr: "10.0.0.9:7070", wantOut: "table"},
		{name: "environment beats the named file", envAddr: "10.0.0.8:7070", args: []string{"--config", named},
			wantAddr: "10.0.0.8:7070", wantOut: "json"},
		{name: "a broken default file is ignored", xdg: brokenXDG, args: []string{"--config", named},
			wantAddr: "10.0.0.1:7070", wantOut: "json"},
		{name: "without --config the default file applies", wantAddr: "10.0.0.2:7070", wantOut: "json"}, // yaml is normalised to json
		{name: "missing named file", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, wantErr: "nope.yaml"},
		{name: "unknown field in the named file", args: []string{"--config", bad}, wantErr: "field adress not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			xdg := tc.xdg
			if xdg == "" {
				xdg = filepath.Join(dir, "xdg")
			}
			t.Setenv("XDG_CONFIG_HOME", xdg)
			t.Setenv("COHORT_CONFIG", "")
			t.Setenv("COHORT_ADDR", tc.envAddr)
			t.Setenv("COHORT_OUTPUT", "")
			t.Cleanup(func() { yamlOutput = false }) // -o yaml is package state
			root := newRootCmd()
			var gotAddr, gotOut string
			root.AddCommand(&cobra.Command{Use: "probe", RunE: func(*cobra.Command, []string) error {
				gotAddr = root.PersistentFlags().Lookup("address").Value.String()
				gotOut = root.PersistentFlags().Lookup("output").Value.String()
				return nil
			}})
			root.SetArgs(append([]string{"probe"}, tc.args...))
			root.SetOut(new(strings.Builder))
			err := root.Execute()
			if tc.wantErr != "" {
				var ee *exitError
				if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--config") {
					t.Fatalf("error %v, want exit 2 naming --config and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
			if gotAddr != tc.wantAddr || gotOut != tc.wantOut {
				t.Errorf("address %q output %q, want %q %q", gotAddr, gotOut, tc.wantAddr, tc.wantOut)
			}
		})
	}
}
