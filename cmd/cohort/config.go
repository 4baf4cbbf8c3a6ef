package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// cliConfig is the optional client configuration file: defaults for the global flags,
// below the flags themselves and the environment (COHORT_ADDR, COHORT_OUTPUT,
// COHORT_TOKEN).
//
//	# ~/.config/cohort/config.yaml
//	address: 10.0.0.1:7070,10.0.0.2:7070,10.0.0.3:7070
//	output: table
//	token: 3f1c...   # ACL token (keep the file chmod 600)
type cliConfig struct {
	Address string `yaml:"address"`
	Output  string `yaml:"output"`
	Token   string `yaml:"token"`
}

// configPath is $COHORT_CONFIG, else $XDG_CONFIG_HOME/cohort/config.yaml, else
// ~/.config/cohort/config.yaml. explicit says whether the file was named.
func configPath() (path string, explicit bool) {
	if p := os.Getenv("COHORT_CONFIG"); p != "" {
		return p, true
	}
	dir := configDir()
	if dir == "" {
		return "", false
	}
	return filepath.Join(dir, "config.yaml"), false
}

// configDir is the CLI's configuration directory: $XDG_CONFIG_HOME/cohort, else
// ~/.config/cohort ("" without a home directory).
func configDir() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "cohort")
}

// loadCLIConfigFrom reads the configuration file at path; explicit says whether the user
// named it (--config or COHORT_CONFIG). A missing default file is no error; a missing
// named file, an unknown field or a bad value is, naming the file.
func loadCLIConfigFrom(path string, explicit bool) (cliConfig, error) {
	var c cliConfig
	if path == "" {
		return c, nil
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return parseCLIConfig(path, raw)
}

// parseCLIConfig decodes a configuration file strictly; errors name path.
func parseCLIConfig(path string, raw []byte) (cliConfig, error) {
	var c cliConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	switch c.Output {
	case "", "table", "json", "yaml":
	default:
		return c, fmt.Errorf("config %s: output: %q is not one of table, json, yaml", path, c.Output)
	}
	return c, nil
}

// globalDefaults resolves the defaults of --address and --output: environment, then
// the configuration file, then the built-in values.
func globalDefaults() (address, output string, err error) {
	path, explicit := configPath()
	return globalDefaultsFrom(path, explicit)
}

// globalDefaultsFrom is globalDefaults with the configuration file at path.
func globalDefaultsFrom(path string, explicit bool) (address, output string, err error) {
	c, err := loadCLIConfigFrom(path, explicit)
	address, output = "127.0.0.1:7070", "table"
	if c.Address != "" {
		address = c.Address
	}
	if c.Output != "" {
		output = c.Output
	}
	if v := os.Getenv("COHORT_ADDR"); v != "" {
		address = v
	}
	if v := os.Getenv("COHORT_OUTPUT"); v != "" {
		output = v
	}
	return address, output, err
}

// applyConfigFlag honours --config FILE: the global flags not given on the command line
// take their defaults from FILE instead of the default file (the environment still
// wins over the file). A missing or invalid FILE is bad input (exit 2).
func applyConfigFlag(root *cobra.Command, g *globalFlags) error {
	if g.config == "" {
		return nil
	}
	address, output, err := globalDefaultsFrom(g.config, true)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--config: %w", err)}
	}
	fl := root.PersistentFlags()
	if !fl.Changed("address") {
		g.address = address
	}
	if !fl.Changed("output") {
		g.output = output
	}
	return nil
}
