package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/internal/tasklog"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// logLineJSON is one line of `job logs -o json`.
type logLineJSON struct {
	Task       string `json:"task"`
	Generation uint64 `json:"generation,omitempty"`
	Line       string `json:"line"`
}

func newJobLogsCmd(g *globalFlags) *cobra.Command {
	var id *jobIDArg
	var follow bool
	var task string
	var tail int32
	cmd := &cobra.Command{
		Use:   "logs JOB_ID [-f] [--task worker-0|ps-0|…] [--tail N]",
		Short: "Print the log lines of a job's tasks (workers and parameter-server shards)",
		Long: `Print what a job's tasks logged, read from storage through the coordinator: each
worker and parameter-server shard writes its lines there every few seconds and when it
ends, so they outlive the nodes. Lines are grouped by task, oldest first, each prefixed
with its task; -o json prints one object a line: {"task", "generation", "line"}, where
line is the task's own JSON log record.

-f follows: it prints new lines as they are written until the job has ended and its
tasks have written their last lines. --task shows one task, --tail N only the last N
lines of each task (then follows, with -f). The coordinator reads the storage named by
its --storage-dir or --s3-bucket (cohort dev: its own).`,
		Example: `  cohort job logs attrition-mlp-1a2b3c4d
  cohort job logs attrition-mlp-1a2b3c4d -f --task worker-0
  cohort job logs attrition-mlp-1a2b3c4d --tail 20 -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if task != "" && !tasklog.ValidTask(task) {
				return usageErr("--task: %q is not a task name (worker-N or ps-N, for example worker-0)", task)
			}
			if tail < 0 {
				return usageErr("--tail: must be >= 0, got %d", tail)
			}
			conn, err := connect(g)
			if err != nil {
				return err
			}
			defer conn.Close()
			client := cohortv1.NewJobServiceClient(conn)
			jobID, err := id.resolveWith(cmd.Context(), client, args)
			if err != nil {
				return err
			}
			stream, err := client.JobLogs(cmd.Context(), &cohortv1.JobLogsRequest{
				Id: jobID, Task: task, Tail: tail, Follow: follow})
			if err != nil {
				return logsErr(err)
			}
			gens := map[string]uint64{} // task -> generation of its last line printed
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return logsErr(err)
				}
				for _, l := range resp.GetLines() {
					if g.output == "json" {
						err = printJSON(stdout, logLineJSON{Task: l.GetTask(), Generation: l.GetGeneration(), Line: l.GetText()})
					} else {
						if prev := gens[l.GetTask()]; prev != 0 && prev != l.GetGeneration() {
							// The task ran again: resumed, placed again or resized.
							fmt.Fprintf(stdout, "%-9s --- generation %d ---\n", l.GetTask(), l.GetGeneration())
						}
						gens[l.GetTask()] = l.GetGeneration()
						_, err = fmt.Fprintf(stdout, "%-9s %s\n", l.GetTask(), formatLogLine(l.GetText()))
					}
					if err != nil {
						return err
					}
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "print new lines until the job has ended")
	cmd.Flags().StringVar(&task, "task", "", "only this task: worker-N or ps-N")
	cmd.Flags().Int32Var(&tail, "tail", 0, "only the last N lines of each task (0: all)")
	id = jobIDFlags(cmd, g)
	return cmd
}

// logsErr maps a JobLogs error: a coordinator without log storage is a failure the
// user can act on, said plainly.
func logsErr(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
		return fmt.Errorf("job logs: %s", st.Message())
	}
	return rpcErr("job logs", err)
}

// formatLogLine renders a task's JSON log record ({"time", "level", "msg", ...}) as
// "15:04:05.000 INFO msg key=value ...", keeping the attributes in their order. A line
// that is not such a record is returned as it is, without control characters.
func formatLogLine(text string) string {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return sanitizeLine(text)
	}
	var head [3]string // time, level, msg
	var attrs []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return sanitizeLine(text)
		}
		key, ok := tok.(string)
		if !ok {
			return sanitizeLine(text)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return sanitizeLine(text)
		}
		val := string(raw)
		var s string
		if json.Unmarshal(raw, &s) == nil {
			val = s
		} else {
			var b bytes.Buffer
			if json.Compact(&b, raw) == nil {
				val = b.String()
			}
		}
		switch key {
		case "time":
			if len(val) >= len("2006-01-02T15:04:05") && val[10] == 'T' {
				val = strings.TrimSuffix(val[11:min(len(val), 23)], "Z")
			}
			head[0] = val
		case "level":
			head[1] = val
		case "msg":
			head[2] = val
		default:
			if val == "" || strings.ContainsAny(val, " \t\"=") {
				val = fmt.Sprintf("%q", val)
			}
			attrs = append(attrs, key+"="+val)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return sanitizeLine(text)
	}
	var parts []string
	for _, p := range head {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return sanitizeLine(strings.Join(append(parts, attrs...), " "))
}

// sanitizeLine replaces control characters (a terminal escape in a log line must not
// reach the user's terminal) with U+FFFD.
func sanitizeLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}
