package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/state"
	"github.com/cohort-dev/cohort/internal/tasklog"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Limits of JobLogs.
const (
	maxLogTail         = 100_000
	maxLogLinesPerSend = 1024
	maxLogBytesPerSend = 1 << 20
)

// errNoLogStore is JobLogs' error on a coordinator started without storage.
var errNoLogStore = errors.New("this coordinator has no storage to read task logs from (start it with --storage-dir, or --s3-endpoint and --s3-bucket, naming the node agents' storage)")

// JobLogs streams the lines a job's tasks wrote to storage: every segment (or, with
// tail, each task's last tail lines), ordered by task, then time. With follow it lists
// new segments every LogPollInterval until the job is terminal and each task of its
// current generation has written its final segment (or LogFollowGrace has passed since
// the job ended: a task whose node died writes none).
func (s *jobService) JobLogs(req *cohortv1.JobLogsRequest, stream cohortv1.JobService_JobLogsServer) error {
	switch {
	case checkID("id", req.Id) != nil:
		return toStatus(checkID("id", req.Id))
	case req.Task != "" && !tasklog.ValidTask(req.Task):
		return toStatus(fmt.Errorf("%w: task %q is not a task name (worker-N or ps-N)", ErrInvalidArgument, req.Task))
	case req.Tail < 0 || req.Tail > maxLogTail:
		return toStatus(fmt.Errorf("%w: tail %d is not between 0 and %d", ErrInvalidArgument, req.Tail, maxLogTail))
	case s.cfg.Logs == nil:
		return toStatus(errNoLogStore)
	}
	ctx := stream.Context()
	job, err := s.awaitJob(ctx, req.Id)
	if err != nil {
		return toStatus(err)
	}
	out := &logSender{stream: stream}
	sent := map[string]bool{}
	segs, err := tasklog.List(ctx, s.cfg.Logs, req.Id, req.Task)
	if err != nil {
		return toStatus(err)
	}
	if req.Tail > 0 {
		for _, task := range groupByTask(segs) {
			lines, err := tasklog.Tail(ctx, s.cfg.Logs, task, int(req.Tail))
			if err != nil {
				return toStatus(err)
			}
			for _, l := range lines {
				if err := out.add(task[0].Task, l.Text, l.Generation); err != nil {
					return err
				}
			}
			for _, seg := range task {
				sent[seg.Key] = true
			}
		}
	}
	if err := s.sendNew(ctx, out, segs, sent); err != nil {
		return err
	}
	if !req.Follow {
		return out.flush()
	}
	var endedAt time.Time
	for {
		if err := out.flush(); err != nil {
			return err
		}
		ended := state.JobTerminal(job.State)
		if ended && endedAt.IsZero() {
			endedAt = time.Now()
		}
		if ended {
			done, err := s.tasksFinished(job, segs)
			if err != nil {
				return toStatus(err)
			}
			if done || time.Since(endedAt) >= s.cfg.LogFollowGrace {
				return nil
			}
		}
		t := time.NewTimer(s.cfg.LogPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return toStatus(ctx.Err())
		case <-t.C:
		}
		if job, err = lookupJob(s.b.State(), nil, req.Id); err != nil {
			return toStatus(err)
		}
		if segs, err = tasklog.List(ctx, s.cfg.Logs, req.Id, req.Task); err != nil {
			return toStatus(err)
		}
		if err := s.sendNew(ctx, out, segs, sent); err != nil {
			return err
		}
	}
}

// awaitJob returns a job from local state, waiting up to FollowerWait for a follower
// that has not applied it yet.
func (s *jobService) awaitJob(ctx context.Context, id string) (*cohortv1.Job, error) {
	waitUntil := time.Now().Add(s.cfg.FollowerWait)
	for {
		ws := memdb.NewWatchSet()
		job, err := lookupJob(s.b.State(), ws, id)
		if !errors.Is(err, fsm.ErrNotFound) || !time.Now().Before(waitUntil) {
			return job, err
		}
		if err := waitCatchUp(ctx, ws, waitUntil); err != nil {
			return nil, err
		}
	}
}

// sendNew sends the lines of the segments not sent yet, in order.
func (s *jobService) sendNew(ctx context.Context, out *logSender, segs []tasklog.Segment, sent map[string]bool) error {
	for _, seg := range segs {
		if sent[seg.Key] {
			continue
		}
		lines, err := tasklog.Read(ctx, s.cfg.Logs, seg)
		if err != nil {
			return toStatus(err)
		}
		sent[seg.Key] = true
		for _, l := range lines {
			if err := out.add(seg.Task, l, seg.Generation); err != nil {
				return err
			}
		}
	}
	return nil
}

// tasksFinished reports whether every task of the job's current generation that is in
// the state store has written its final segment.
func (s *jobService) tasksFinished(job *cohortv1.Job, segs []tasklog.Segment) (bool, error) {
	allocs, err := s.b.State().AllocsByJob(nil, job.Id)
	if err != nil {
		return false, err
	}
	final := map[string]bool{}
	for _, seg := range segs {
		if seg.Final && seg.Generation == job.Generation {
			final[seg.Task] = true
		}
	}
	for _, a := range allocs {
		if a.Generation == job.Generation && !final[tasklog.TaskName(a.Kind, a.Index)] {
			return false, nil
		}
	}
	return true, nil
}

// groupByTask splits ordered segments into runs of one task each.
func groupByTask(segs []tasklog.Segment) [][]tasklog.Segment {
	var out [][]tasklog.Segment
	for i, seg := range segs {
		if i == 0 || seg.Task != segs[i-1].Task {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], seg)
	}
	return out
}

// logSender batches lines into JobLogsResponse messages.
type logSender struct {
	stream cohortv1.JobService_JobLogsServer
	batch  []*cohortv1.LogLine
	bytes  int
}

func (l *logSender) add(task, text string, gen uint64) error {
	l.batch = append(l.batch, &cohortv1.LogLine{Task: task, Text: text, Generation: gen})
	l.bytes += len(text) + len(task) + 16
	if len(l.batch) >= maxLogLinesPerSend || l.bytes >= maxLogBytesPerSend {
		return l.flush()
	}
	return nil
}

func (l *logSender) flush() error {
	if len(l.batch) == 0 {
		return nil
	}
	err := l.stream.Send(&cohortv1.JobLogsResponse{Lines: l.batch})
	l.batch, l.bytes = nil, 0
	return err
}
