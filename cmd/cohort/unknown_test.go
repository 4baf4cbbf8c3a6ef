package main

import (
	"strings"
	"testing"
)

// TestUnknownSubcommandIsBadInput: a mistyped verb under a command group is an error
// naming it (with a suggestion), not the group's help and exit 0; real verbs, flags
// with values and --help pass through to cobra.
func TestUnknownSubcommandIsBadInput(t *testing.T) {
	root := newRootCmd()
	for _, tc := range []struct {
		args []string
		want string // "" when no error is expected
	}{
		{[]string{"job", "lisst"}, `unknown command "lisst" for "cohort job"; did you mean "list"?`},
		{[]string{"-o", "json", "job", "frobnicate"}, `unknown command "frobnicate" for "cohort job"`},
		{[]string{"job", "-o", "json", "lisst"}, `unknown command "lisst"`},
		{[]string{"operator", "raft", "nope"}, `for "cohort operator raft"`},
		{[]string{"job", "list"}, ""},
		{[]string{"job", "-o", "json", "list"}, ""},
		{[]string{"job", "--output=json", "list"}, ""},
		{[]string{"job"}, ""},
		{[]string{"job", "--help"}, ""},
		{[]string{"version"}, ""},
	} {
		err := unknownSubcommand(root, tc.args)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: unexpected error %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		case tc.want != "":
			if ee, ok := err.(*exitError); !ok || ee.code != 2 {
				t.Errorf("%v: %v is not a bad-input (exit 2) error", tc.args, err)
			}
		}
	}
}
