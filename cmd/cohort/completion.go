package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func init() { registerCommand(newCompletionCmd) }

// completionShells are the shells `cohort completion` writes scripts for.
var completionShells = []string{"bash", "zsh", "fish", "powershell"}

// newCompletionCmd replaces cobra's default completion command (cobra adds its own only
// when the root has none) with one that has examples and rejects an unknown shell as
// bad input (exit 2).
func newCompletionCmd(_ *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script for cohort",
		Long: `Print a completion script for the given shell on standard output. It completes
commands, flags and, where the shell supports it, their descriptions.`,
		Example: `  # bash, this shell only (needs the bash-completion package)
  source <(cohort completion bash)
  # bash, every new shell
  cohort completion bash > /etc/bash_completion.d/cohort
  # zsh (with compinit enabled)
  cohort completion zsh > "${fpath[1]}/_cohort"
  # fish
  cohort completion fish > ~/.config/fish/completions/cohort.fish`,
		ValidArgs:             completionShells,
		DisableFlagsInUseLine: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErr("%s takes one argument, the shell (one of %s), got %d",
					cmd.CommandPath(), strings.Join(completionShells, ", "), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, w := cmd.Root(), stdout
			var err error
			switch args[0] {
			case "bash":
				err = root.GenBashCompletionV2(w, true)
			case "zsh":
				err = root.GenZshCompletion(w)
			case "fish":
				err = root.GenFishCompletion(w, true)
			case "powershell":
				err = root.GenPowerShellCompletionWithDesc(w)
			default:
				return usageErr("shell: %q is not one of %s", args[0], strings.Join(completionShells, ", "))
			}
			if err != nil {
				return fmt.Errorf("completion %s: %w", args[0], err)
			}
			return nil
		},
	}
}
