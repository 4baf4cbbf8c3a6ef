package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash":       "__start_cohort",
		"zsh":        "#compdef cohort",
		"fish":       "complete -c cohort",
		"powershell": "Register-ArgumentCompleter",
	} {
		t.Run(shell, func(t *testing.T) {
			out, err := runCLI(t, "completion", shell)
			if err != nil {
				t.Fatalf("completion %s: %v", shell, err)
			}
			if !strings.Contains(out, marker) {
				t.Errorf("completion %s: output lacks %q (%d bytes)", shell, marker, len(out))
			}
		})
	}
}

func TestCompletionBadShellIsUsageError(t *testing.T) {
	for _, args := range [][]string{{"completion", "tcsh"}, {"completion"}, {"completion", "bash", "zsh"}} {
		_, err := runCLI(t, args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%v: err %v, want exit status 2", args, err)
			continue
		}
		if !strings.Contains(err.Error(), "bash, zsh, fish, powershell") {
			t.Errorf("%v: message %q does not list the shells", args, err)
		}
	}
}

// TestCompletionCompletesVerbs checks what the scripts ask the binary at run time:
// `cohort __complete job ""` lists the job verbs.
func TestCompletionCompletesVerbs(t *testing.T) {
	complete := func(args ...string) string {
		var out bytes.Buffer
		root := newRootCmd()
		root.SetOut(&out) // cobra's __complete writes to the command's output
		root.SetErr(io.Discard)
		root.SetArgs(append([]string{"__complete"}, args...))
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("__complete %v: %v", args, err)
		}
		return out.String()
	}
	out := complete("job", "")
	for _, verb := range []string{"submit", "status", "watch", "cancel"} {
		if !strings.Contains(out, verb) {
			t.Errorf("completions of `cohort job` lack %q:\n%s", verb, out)
		}
	}
	if out = complete("completion", ""); !strings.Contains(out, "zsh") {
		t.Errorf("completions of `cohort completion` lack zsh:\n%s", out)
	}
}

// verbsWithoutExample are the verbs that still lack an Example in --help. The list may
// only shrink: a new verb needs an example.
var verbsWithoutExample = []string{
	"cohort bench compute",
	"cohort checkpoint",
	"cohort data gen",
	"cohort export",
	"cohort gpu info",
	"cohort operator raft remove-peer",
	"cohort operator raft transfer-leadership",
	"cohort operator snapshot restore",
	"cohort queue list",
	"cohort quota delete",
	"cohort quota list",
	"cohort serve",
	"cohort version",
}

// TestEveryVerbHasAnExample walks the command tree: every runnable command outside
// verbsWithoutExample shows an example in its --help.
func TestEveryVerbHasAnExample(t *testing.T) {
	root := newRootCmd()
	root.InitDefaultHelpCmd()
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if !c.Runnable() || c.Hidden || c.Name() == "help" || c.Example != "" {
			return
		}
		if !slices.Contains(verbsWithoutExample, c.CommandPath()) {
			t.Errorf("%s has no Example in its --help", c.CommandPath())
		}
	}
	walk(root)
}
