package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "address: 10.0.0.1:7070,10.0.0.2:7070\noutput: json\n")
	for _, tc := range []struct {
		name, config, envAddr    string
		wantAddr, wantOut, wantE string
	}{
		{name: "no file", config: "", wantAddr: "127.0.0.1:7070", wantOut: "table"},
		{name: "file", config: good, wantAddr: "10.0.0.1:7070,10.0.0.2:7070", wantOut: "json"},
		{name: "env beats file", config: good, envAddr: "10.9.9.9:7070", wantAddr: "10.9.9.9:7070", wantOut: "json"},
		{name: "unknown field", config: write("bad.yaml", "adress: x\n"), wantE: "field adress not found"},
		{name: "bad output", config: write("out.yaml", "output: xml\n"), wantE: `output: "xml"`},
		{name: "named file missing", config: filepath.Join(dir, "nope.yaml"), wantE: "nope.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "empty")) // no default file
			t.Setenv("COHORT_CONFIG", tc.config)
			t.Setenv("COHORT_ADDR", tc.envAddr)
			t.Setenv("COHORT_OUTPUT", "")
			root := newRootCmd()
			if got := root.PersistentFlags().Lookup("address").DefValue; tc.wantE == "" && got != tc.wantAddr {
				t.Errorf("--address default %q, want %q", got, tc.wantAddr)
			}
			if got := root.PersistentFlags().Lookup("output").DefValue; tc.wantE == "" && got != tc.wantOut {
				t.Errorf("--output default %q, want %q", got, tc.wantOut)
			}
			root.SetArgs([]string{"version"})
			root.SetOut(new(strings.Builder))
			err := root.Execute()
			if tc.wantE == "" {
				if err != nil {
					t.Fatalf("version: %v", err)
				}
				return
			}
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.wantE) || !strings.Contains(err.Error(), tc.config) {
				t.Fatalf("error %v, want exit 2 naming %s and %q", err, tc.config, tc.wantE)
			}
		})
	}
}

// FuzzCLIConfig: any file content gives a config or an error naming the file, never a
// panic, and an accepted config has a valid output format.
func FuzzCLIConfig(f *testing.F) {
	for _, s := range []string{"", "address: a:1\noutput: json\n", "adress: x", "output: [1", "---\n---\n", "address: {a: b}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := parseCLIConfig("cfg.yaml", raw)
		if err != nil {
			if !strings.Contains(err.Error(), "cfg.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		switch c.Output {
		case "", "table", "json", "yaml":
		default:
			t.Fatalf("accepted output %q", c.Output)
		}
	})
}
