package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

// TestEveryVerbHasAnExample walks the command tree: every runnable command shows an
// example in its --help, and every example line is an invocation of that command whose
// flags it has (a renamed verb or flag breaks the test, not the user's copy and paste).
func TestEveryVerbHasAnExample(t *testing.T) {
	root := newRootCmd()
	root.InitDefaultHelpCmd()
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if !c.Runnable() || c.Hidden || c.Name() == "help" {
			return
		}
		if c.Example == "" {
			t.Errorf("%s has no Example in its --help", c.CommandPath())
			return
		}
		for _, line := range exampleLines(c.Example) {
			if err := checkExampleLine(root, c, line); err != nil {
				t.Errorf("%s: example %q: %v", c.CommandPath(), strings.TrimSpace(line), err)
			}
		}
	}
	walk(root)
}

// exampleLines splits an Example into its command lines: comment lines are dropped and
// lines continued with a trailing backslash are joined.
func exampleLines(example string) []string {
	var out []string
	cont := false
	for _, line := range strings.Split(example, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		joined := strings.TrimSuffix(line, "\\")
		if cont {
			out[len(out)-1] += " " + strings.TrimSpace(joined)
		} else {
			out = append(out, joined)
		}
		cont = joined != line
	}
	return out
}

// checkExampleLine checks one command line of c's Example: indented by two spaces, it
// runs c (found from its words as cobra finds it) with flags c has. Environment
// assignments before the command, a process substitution around it, a redirection or
// pipe after it and a trailing "# comment" are allowed.
func checkExampleLine(root, c *cobra.Command, line string) error {
	if !strings.HasPrefix(line, "  ") {
		return errors.New("not indented by two spaces")
	}
	line, _, _ = strings.Cut(line, " #")
	var words []string
	started := false
	for _, w := range strings.Fields(line) {
		switch {
		case !started && (w == root.Name() || strings.HasPrefix(w, "<("+root.Name()) && len(w) == len(root.Name())+2):
			started = true
			continue
		case !started:
			continue // checked below: NAME=value, or a command around a process substitution
		}
		if strings.HasPrefix(w, ">") || strings.HasPrefix(w, "<") || w == "|" || w == "&&" || w == ";" || w == "&" {
			break
		}
		words = append(words, strings.TrimSuffix(w, ")"))
	}
	if !started {
		return fmt.Errorf("does not run %q", root.Name())
	}
	before, _, _ := strings.Cut(strings.TrimSpace(line), root.Name())
	for _, w := range strings.Fields(before) {
		if !strings.Contains(w, "=") && !strings.HasSuffix(w, "<(") && w != "source" && w != "eval" && w != "$(" {
			return fmt.Errorf("does not start with %q (or NAME=value assignments before it)", root.Name())
		}
	}
	found, _, err := root.Find(words)
	if err != nil {
		return err
	}
	if found != c {
		return fmt.Errorf("runs %s, not %s", found.CommandPath(), c.CommandPath())
	}
	for _, w := range words {
		if !strings.HasPrefix(w, "-") || w == "-" || w == "--" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
		known := c.Flags().Lookup(name) != nil || c.InheritedFlags().Lookup(name) != nil
		if !strings.HasPrefix(w, "--") {
			known = len(name) == 1 && (c.Flags().ShorthandLookup(name) != nil || c.InheritedFlags().ShorthandLookup(name) != nil)
		}
		if !known {
			return fmt.Errorf("%s has no flag %s", c.CommandPath(), w)
		}
	}
	return nil
}

// TestCheckExampleLineRefusesWrongExamples: the example check catches a wrong verb, an
// unknown flag, a missing indent and a line that does not run cohort.
func TestCheckExampleLineRefusesWrongExamples(t *testing.T) {
	root := newRootCmd()
	list, _, err := root.Find([]string{"job", "list"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{"  cohort job list", "  cohort job list -o json -n research", "  COHORT_ADDR=a:1 cohort job list --address b:2 | wc -l"} {
		if err := checkExampleLine(root, list, ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"cohort job list", "  cohort job lists", "  cohort job status x", "  cohort job list --wait",
		"  cohort job list -x", "  kubectl get pods", "  echo cohort job list"} {
		if err := checkExampleLine(root, list, bad); err == nil {
			t.Errorf("%q passed the check", bad)
		}
	}
}
