package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/node"
)

// tokenFlagUsage is the help of the global --token flag. Its default is resolved after
// parsing (resolveToken), so that --help never prints a secret.
const tokenFlagUsage = "ACL token sent to the coordinators as \"authorization: Bearer TOKEN\" " +
	"(env COHORT_TOKEN, config file token; sent inside the TLS connection)"

// resolveToken gives --token its value when it was not on the command line: COHORT_TOKEN,
// else the token of the config file in use (the same precedence as --address).
func resolveToken(root *cobra.Command, g *globalFlags) error {
	if root.PersistentFlags().Changed("token") {
		return nil
	}
	if v := os.Getenv("COHORT_TOKEN"); v != "" {
		g.token = v
		return nil
	}
	configPath, explicit := configFileInUse(g)
	c, err := loadCLIConfigFrom(configPath, explicit)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if c.Token != "" {
		checkTokenFile(configPath)
	}
	g.token = c.Token
	return nil
}

// tokenDialOptions sends token on every call; none when token is empty.
func tokenDialOptions(token string) []grpc.DialOption {
	if token == "" || node.IsJoinToken(token) { // a join token is for login and --join only
		return nil
	}
	return []grpc.DialOption{grpc.WithPerRPCCredentials(api.BearerToken(token))}
}

// configFileInUse is the config file the global flags default from: --config, else
// $COHORT_CONFIG, else the default path.
func configFileInUse(g *globalFlags) (string, bool) {
	if g.config != "" {
		return g.config, true
	}
	return configPath()
}

// checkTokenFile warns when a config file holding a token can be read by others.
func checkTokenFile(path string) {
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "warning: %s holds an ACL token and is readable by other users (chmod 600 %s)\n", path, path)
}
