package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// jobIDArg is the JOB_ID argument of a job verb. The user may give a job's ID, a unique
// prefix of it, or the job's name (unique among the jobs); --latest takes the newest
// job (of that name or prefix, when one is given too).
type jobIDArg struct{ latest bool }

// jobIDFlags gives cmd the JOB_ID argument: --latest, the argument check (one
// argument, or none with --latest) and shell completion of job IDs.
func jobIDFlags(cmd *cobra.Command, g *globalFlags) *jobIDArg {
	a := &jobIDArg{}
	cmd.Flags().BoolVar(&a.latest, "latest", false, "the newest job (of the name or ID prefix given, if any) instead of JOB_ID")
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) > 1:
			return usageErr("%s takes one JOB_ID (an ID, a unique ID prefix or a job name), got %d arguments", cmd.CommandPath(), len(args))
		case len(args) == 0 && !a.latest:
			return usageErr("%s needs a JOB_ID (an ID, a unique ID prefix or a job name) or --latest", cmd.CommandPath())
		}
		return nil
	}
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return completeJobIDs(cmd.Context(), g, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
	return a
}

// resolve dials the coordinator and resolves the argument (see resolveJobID).
func (a *jobIDArg) resolve(ctx context.Context, g *globalFlags, args []string) (string, error) {
	conn, err := connect(g)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return a.resolveWith(ctx, cohortv1.NewJobServiceClient(conn), args)
}

// resolveWith resolves the argument with an open client.
func (a *jobIDArg) resolveWith(ctx context.Context, c cohortv1.JobServiceClient, args []string) (string, error) {
	arg := ""
	if len(args) > 0 {
		arg = args[0]
	}
	return resolveJobID(ctx, c, arg, a.latest)
}

// resolveJobID turns what the user typed into a job ID, from the job list: an exact
// ID; else the job of that name (several: an error listing them, unless latest); else
// the job whose ID starts with it (several: an error listing them, unless latest).
// Nothing matching is a not-found error with a did-you-mean. All are bad input (exit
// 2). When the jobs cannot be listed (a token without the right), arg is taken as an ID.
func resolveJobID(ctx context.Context, c cohortv1.JobServiceClient, arg string, latest bool) (string, error) {
	resp, err := c.ListJobs(ctx, &cohortv1.ListJobsRequest{})
	if err != nil {
		if st, ok := status.FromError(err); ok && !latest && arg != "" &&
			(st.Code() == codes.PermissionDenied || st.Code() == codes.Unimplemented) {
			return arg, nil
		}
		return "", rpcErr("list jobs", err)
	}
	all := resp.GetJobs() // oldest first
	if latest {
		cands := all
		if arg != "" {
			cands = slices.DeleteFunc(slices.Clone(all), func(j *cohortv1.Job) bool {
				return j.GetName() != arg && !strings.HasPrefix(j.GetId(), arg)
			})
		}
		if len(cands) == 0 {
			if arg == "" {
				return "", usageErr("--latest: there are no jobs yet (cohort job submit FILE)")
			}
			return "", jobNotFound(arg, all)
		}
		return cands[len(cands)-1].GetId(), nil
	}
	if i := slices.IndexFunc(all, func(j *cohortv1.Job) bool { return j.GetId() == arg }); i >= 0 {
		return arg, nil
	}
	if named := filterJobs(all, func(j *cohortv1.Job) bool { return j.GetName() == arg }); len(named) == 1 {
		return named[0].GetId(), nil
	} else if len(named) > 1 {
		return "", usageErr("job name %q matches %d jobs:\n%s\ngive one ID (or a unique prefix), or --latest for the newest",
			arg, len(named), candidateList(named))
	}
	if prefixed := filterJobs(all, func(j *cohortv1.Job) bool { return strings.HasPrefix(j.GetId(), arg) }); len(prefixed) == 1 {
		return prefixed[0].GetId(), nil
	} else if len(prefixed) > 1 {
		return "", usageErr("job ID prefix %q is ambiguous, it matches %d jobs:\n%s\ngive more of the ID, or --latest for the newest",
			arg, len(prefixed), candidateList(prefixed))
	}
	// Not in the list this caller may read: the coordinator has the last word on a job
	// outside it (a namespace the caller's token may not read is refused as such).
	if _, err := c.GetJob(ctx, &cohortv1.GetJobRequest{Id: arg}); err == nil {
		return arg, nil
	} else if st, ok := status.FromError(err); !ok || st.Code() != codes.NotFound {
		return "", rpcErr("get job", err)
	}
	return "", jobNotFound(arg, all)
}

// filterJobs returns the jobs keep keeps.
func filterJobs(all []*cohortv1.Job, keep func(*cohortv1.Job) bool) []*cohortv1.Job {
	var out []*cohortv1.Job
	for _, j := range all {
		if keep(j) {
			out = append(out, j)
		}
	}
	return out
}

// candidateList is one line per job: "  ID  NAME  STATE  SUBMITTED", oldest first.
func candidateList(js []*cohortv1.Job) string {
	var b strings.Builder
	for i, j := range js {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "  %s  %s  %s  submitted %s", j.GetId(), j.GetName(), stateName(j.GetState()),
			time.Unix(0, j.GetSubmitTimeUnixNano()).UTC().Format(time.RFC3339))
	}
	return b.String()
}

// jobNotFound is the error of a JOB_ID that matches no job: with the closest ID or name
// when one is close, and where to look.
func jobNotFound(arg string, all []*cohortv1.Job) error {
	if len(all) == 0 {
		return usageErr("job %q not found: there are no jobs yet (cohort job submit FILE)", arg)
	}
	var options []string
	for _, j := range all {
		options = append(options, j.GetId(), j.GetName())
	}
	return usageErr("job %q not found%s; `cohort job list` shows the jobs", arg, jobs.DidYouMean(arg, options))
}

// completeJobIDs lists the job IDs starting with toComplete (or whose name does), each
// described by its name and state, newest first; nothing when the coordinator cannot
// be reached within two seconds.
func completeJobIDs(ctx context.Context, g *globalFlags, toComplete string) []cobra.Completion {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if normalizeOutput(g) != nil {
		return nil
	}
	creds, err := clientCredentials(g)
	if err != nil {
		return nil
	}
	conn, err := dial(g.address, creds, tokenDialOptions(g.token)...)
	if err != nil {
		return nil
	}
	defer conn.Close()
	resp, err := cohortv1.NewJobServiceClient(conn).ListJobs(ctx, &cohortv1.ListJobsRequest{})
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	js := resp.GetJobs()
	for i := len(js) - 1; i >= 0; i-- {
		j := js[i]
		if strings.HasPrefix(j.GetId(), toComplete) || strings.HasPrefix(j.GetName(), toComplete) {
			out = append(out, cobra.CompletionWithDesc(j.GetId(), j.GetName()+", "+stateName(j.GetState())))
		}
	}
	return out
}
