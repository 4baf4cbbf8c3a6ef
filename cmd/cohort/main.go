// Command cohort is the single Cohort binary: the embedded dev cluster, the coordinator
// and node agents, and the user and admin verbs.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a process exit status: 2 for bad input, 1 for failures.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as bad input (exit status 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// failed marks err as a failure (exit status 1) whose message was already printed.
var errSilentFailure = errors.New("")

type globalFlags struct {
	address string
	output  string
	yaml    bool // -o yaml, normalised to output "json" (see normalizeOutput)
	config  string
	token   string // ACL token (see resolveToken)
	// tlsDir is --tls-dir; tlsDirSet says whether it was on the command line (see
	// clientTLSDir and nodeTLSConfig).
	tlsDir    string
	tlsDirSet bool
}

// commandFactories holds the top-level commands that register themselves from their own
// file with registerCommand (in an init function), so adding a command group does not
// touch this file.
var commandFactories []func(*globalFlags) *cobra.Command

// registerCommand adds a top-level command group to the root command.
func registerCommand(f func(*globalFlags) *cobra.Command) {
	commandFactories = append(commandFactories, f)
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "cohort",
		Short:         "Cohort: a distributed training cluster in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
		Long: `Cohort schedules data-parallel training jobs onto worker nodes, with sharded
parameter servers, trusted checkpoints and export for serving.

Start an embedded cluster and train the example job:
  cohort dev --run jobs/examples/attrition-mlp.yaml -o json

Every connection is mutual TLS: the CLI presents the client certificate in --tls-dir
(else COHORT_TLS_DIR, else ~/.config/cohort when it holds one); a coordinator that
bootstraps writes one for the operator and prints where.

The coordinator address, output format and ACL token default from COHORT_ADDR /
COHORT_OUTPUT / COHORT_TOKEN, then from the config file (--config, else $COHORT_CONFIG,
else ~/.config/cohort/config.yaml):
  address: 10.0.0.1:7070,10.0.0.2:7070
  output: table
  token: 3f1c...`,
	}
	defAddr, defOutput, cfgErr := globalDefaults()
	root.PersistentFlags().StringVar(&g.address, "address", defAddr, "coordinator gRPC address(es), comma-separated (env COHORT_ADDR, config file address)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", defOutput, "output format: table|json|yaml (env COHORT_OUTPUT, config file output)")
	root.PersistentFlags().StringVar(&g.config, "config", "", "client config file (default $COHORT_CONFIG, else ~/.config/cohort/config.yaml)")
	root.PersistentFlags().StringVar(&g.token, "token", "", tokenFlagUsage)
	root.PersistentFlags().StringVar(&g.tlsDir, "tls-dir", "", tlsDirUsage)
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		g.tlsDirSet = root.PersistentFlags().Changed("tls-dir")
		if g.config != "" { // the named file replaces the default one, and its error
			if err := applyConfigFlag(root, g); err != nil {
				return err
			}
		} else if cfgErr != nil {
			return &exitError{code: 2, err: cfgErr}
		}
		if err := resolveToken(root, g); err != nil {
			return err
		}
		return normalizeOutput(g)
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	root.AddCommand(newDevCmd(g), newJobCmd(g), newNodeCmd(g), newDataCmd(), newVersionCmd(g))
	root.AddCommand(newCoordinatorCmd(g), newOperatorCmd(g), newWorkerCmd(g), newParamserverCmd(g))
	for _, f := range commandFactories {
		root.AddCommand(f(g))
	}
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	err := unknownSubcommand(root, os.Args[1:])
	if err == nil {
		err = root.ExecuteContext(ctx)
	}
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	} else if isArgsError(err) {
		code = 2
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "error:", msg)
	}
	os.Exit(code)
}

// unknownSubcommand reports a bad-input error when args name a command group (such as
// `cohort job`) followed by a word that is none of its subcommands. Cobra rejects that
// only at the root; below it, it prints the group's help and exits 0, so a mistyped
// `cohort job lisst` in a script would look like success.
func unknownSubcommand(root *cobra.Command, args []string) error {
	c, rest, err := root.Find(args)
	if err != nil || c == root || !c.HasSubCommands() || c.Runnable() {
		return nil
	}
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" || a == "-h" || a == "--help" {
			return nil
		}
		if strings.HasPrefix(a, "-") { // skip a flag, and its value when it takes one
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			f := c.Flags().Lookup(name)
			if f == nil && len(name) == 1 {
				f = c.Flags().ShorthandLookup(name)
			}
			if f == nil {
				f = c.InheritedFlags().Lookup(name)
			}
			if f == nil && len(name) == 1 {
				f = c.InheritedFlags().ShorthandLookup(name)
			}
			if f != nil && !hasValue && f.NoOptDefVal == "" {
				i++
			}
			continue
		}
		msg := fmt.Sprintf("unknown command %q for %q", a, c.CommandPath())
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2 // cobra's default, set only when it suggests itself
		}
		if s := c.SuggestionsFor(a); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return usageErr("%s (see %s --help)", msg, c.CommandPath())
	}
	return nil
}
