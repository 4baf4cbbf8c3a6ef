package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/scheduler"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// jobService implements cohortv1.JobServiceServer.
type jobService struct {
	cohortv1.UnimplementedJobServiceServer
	b      Backend
	cfg    Config
	adm    *server.Admission
	logger *slog.Logger
}

// NewJobService returns the user-facing JobService handlers over b.
func NewJobService(b Backend, cfg Config) cohortv1.JobServiceServer {
	cfg = cfg.withBackendClock(b).withDefaults()
	logger := cfg.Logger.With("component", "api.jobs")
	adm := server.NewAdmission(server.AdmissionConfig{ParseSpec: cfg.ParseSpec, MaxSpecBytes: cfg.MaxSpecBytes, Now: cfg.Now, Logger: logger})
	return &jobService{b: b, cfg: cfg, adm: adm, logger: logger}
}

// SubmitJob admits the spec (server.Admission) and proposes the job; a retry with the
// same idempotency key returns the first job with created=false.
//
// On a follower the call is forwarded to the leader with the submission's key: the
// caller's, or the one admission minted here, so a retry after a leadership change
// cannot create a second job.
func (s *jobService) SubmitJob(ctx context.Context, req *cohortv1.SubmitJobRequest) (*cohortv1.SubmitJobResponse, error) {
	if len(req.IdempotencyKey) > maxIdempotencyKeyLen {
		return nil, toStatus(fmt.Errorf("%w: idempotency_key is longer than %d bytes", ErrInvalidArgument, maxIdempotencyKeyLen))
	}
	sub := &server.Submission{Spec: req.SpecYaml, IdempotencyKey: req.IdempotencyKey, WaitForCapacity: req.WaitForCapacity}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.SubmitJobResponse, error) {
		snap := s.b.State().Snapshot()
		job, err := s.adm.Admit(snap, sub)
		if err != nil {
			return nil, err
		}
		if s.cfg.RefuseWithoutNodes && !req.WaitForCapacity {
			none, err := noNodes(snap)
			if err != nil {
				return nil, err
			}
			if len(none) > 0 {
				s.logger.Info("job refused", "step", "nodes", "job", job.Name, "namespace", job.Namespace)
				return nil, fmt.Errorf("%w: job %q can never run now: %s; submit with --wait-for-capacity to queue it until nodes join",
					ErrInvalidArgument, job.Name, none[0])
			}
		}
		warnings, err := s.cfg.Preflight.check(ctx, req.SpecYaml)
		if err != nil {
			s.logger.Info("job refused", "step", "data", "job", job.Name, "namespace", job.Namespace, "err", err)
			return nil, err
		}
		resp, err := s.propose(ctx, job)
		if err != nil {
			return nil, err
		}
		resp.Warnings = warnings
		return resp, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.SubmitJobResponse, error) {
		// Only a proposal finds no leader, so admission has filled the key in by now.
		fwd := proto.Clone(req).(*cohortv1.SubmitJobRequest)
		fwd.IdempotencyKey = sub.IdempotencyKey
		return cohortv1.NewJobServiceClient(c).SubmitJob(ctx, fwd)
	})
}

// propose applies an admitted job's SubmitJob command.
func (s *jobService) propose(ctx context.Context, job *cohortv1.Job) (*cohortv1.SubmitJobResponse, error) {
	out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SubmitJob{
		SubmitJob: &cohortv1.SubmitJobCommand{Job: job},
	}})
	if err != nil {
		return nil, err
	}
	res, ok := out.(*fsm.SubmitJobResult)
	if !ok {
		return nil, fmt.Errorf("api: submit job: unexpected response %T", out)
	}
	if res.Created {
		s.logger.Info("job submitted", "job", res.Job.Id, "namespace", res.Job.Namespace)
	}
	return &cohortv1.SubmitJobResponse{Job: res.Job, Created: res.Created}, nil
}

// GetJob returns a job with its allocations (a consistent read unless stale).
func (s *jobService) GetJob(ctx context.Context, req *cohortv1.GetJobRequest) (*cohortv1.GetJobResponse, error) {
	if err := checkID("id", req.Id); err != nil {
		return nil, toStatus(err)
	}
	return readCall(ctx, s.b, s.cfg, func() (*cohortv1.GetJobResponse, error) {
		snap := s.b.State().Snapshot()
		job, err := snap.JobByID(nil, req.Id)
		if err != nil {
			return nil, err
		}
		if job == nil {
			return nil, fmt.Errorf("%w: job %q", fsm.ErrNotFound, req.Id)
		}
		allocs, err := snap.AllocsByJob(nil, req.Id)
		if err != nil {
			return nil, err
		}
		return &cohortv1.GetJobResponse{Job: liveJob(s.b, job), Allocations: liveAllocs(s.b, allocs)}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.GetJobResponse, error) {
		return cohortv1.NewJobServiceClient(c).GetJob(ctx, req)
	})
}

// ListJobs returns the jobs of a namespace (all when empty), oldest first (a
// consistent read unless stale).
func (s *jobService) ListJobs(ctx context.Context, req *cohortv1.ListJobsRequest) (*cohortv1.ListJobsResponse, error) {
	return readCall(ctx, s.b, s.cfg, func() (*cohortv1.ListJobsResponse, error) {
		jobs, err := s.b.State().Jobs(nil)
		if err != nil {
			return nil, err
		}
		if req.Namespace != "" {
			jobs = slices.DeleteFunc(jobs, func(j *cohortv1.Job) bool { return j.Namespace != req.Namespace })
		}
		slices.SortFunc(jobs, func(a, b *cohortv1.Job) int {
			return cmp.Or(cmp.Compare(a.SubmitTimeUnixNano, b.SubmitTimeUnixNano), cmp.Compare(a.Id, b.Id))
		})
		for i, j := range jobs {
			jobs[i] = liveJob(s.b, j)
		}
		return &cohortv1.ListJobsResponse{Jobs: jobs}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ListJobsResponse, error) {
		return cohortv1.NewJobServiceClient(c).ListJobs(ctx, req)
	})
}

// CancelJob cancels a job. Cancelling a cancelled job returns it; cancelling a job that
// already succeeded or failed is FailedPrecondition.
func (s *jobService) CancelJob(ctx context.Context, req *cohortv1.CancelJobRequest) (*cohortv1.CancelJobResponse, error) {
	if err := checkID("id", req.Id); err != nil {
		return nil, toStatus(err)
	}
	if len(req.Reason) > maxReasonLen {
		return nil, toStatus(fmt.Errorf("%w: reason is longer than %d bytes", ErrInvalidArgument, maxReasonLen))
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.CancelJobResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_CancelJob{
			CancelJob: &cohortv1.CancelJobCommand{JobId: req.Id, Reason: req.Reason},
		}})
		if err != nil {
			return nil, err
		}
		res, ok := out.(*fsm.CancelJobResult)
		if !ok {
			return nil, fmt.Errorf("api: cancel job: unexpected response %T", out)
		}
		if !res.Cancelled && res.Job.State != cohortv1.JobState_JOB_STATE_CANCELLED {
			return nil, fmt.Errorf("%w: job %s already %s", fsm.ErrTerminal, res.Job.Id, jobStateName(res.Job.State))
		}
		return &cohortv1.CancelJobResponse{Job: res.Job}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.CancelJobResponse, error) {
		return cohortv1.NewJobServiceClient(c).CancelJob(ctx, req)
	})
}

// WatchJob sends the job now and after every change; it ends after sending a terminal
// state. It is served from this coordinator's local state; a job this coordinator has
// not applied yet (a follower just behind the leader) is waited for up to
// Config.FollowerWait before the answer is NotFound.
func (s *jobService) WatchJob(req *cohortv1.WatchJobRequest, stream cohortv1.JobService_WatchJobServer) error {
	if err := checkID("id", req.Id); err != nil {
		return toStatus(err)
	}
	ctx := stream.Context()
	var lastIndex uint64
	var lastProgress [2]int64
	waitUntil := time.Now().Add(s.cfg.FollowerWait)
	for {
		ws := memdb.NewWatchSet()
		job, err := lookupJob(s.b.State(), ws, req.Id)
		if errors.Is(err, fsm.ErrNotFound) && lastIndex == 0 && time.Now().Before(waitUntil) {
			if err := waitCatchUp(ctx, ws, waitUntil); err != nil {
				return toStatus(err)
			}
			continue
		}
		if err != nil {
			return toStatus(err)
		}
		watchLive(s.b, ws)
		job = liveJob(s.b, job)
		if s.followerWatch(job) {
			job = s.leaderProgress(ctx, job)
			pollSoon(ws, followerPoll)
		}
		if job.ModifyIndex != lastIndex || progressKey(job) != lastProgress {
			if err := stream.Send(&cohortv1.WatchJobResponse{Job: job}); err != nil {
				return err
			}
			lastIndex, lastProgress = job.ModifyIndex, progressKey(job)
		}
		if state.JobTerminal(job.State) {
			return nil
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return toStatus(err)
		}
	}
}

// ListNodes returns every registered node, ordered by ID (a consistent read unless
// stale).
func (s *jobService) ListNodes(ctx context.Context, req *cohortv1.ListNodesRequest) (*cohortv1.ListNodesResponse, error) {
	return readCall(ctx, s.b, s.cfg, func() (*cohortv1.ListNodesResponse, error) {
		nodes, err := s.b.State().Nodes(nil)
		if err != nil {
			return nil, err
		}
		return &cohortv1.ListNodesResponse{Nodes: liveNodes(s.b, nodes), ClusterId: s.b.State().ClusterID()}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ListNodesResponse, error) {
		return cohortv1.NewJobServiceClient(c).ListNodes(ctx, req)
	})
}

// PlanJob dry-runs the scheduler for a spec against the current state (a consistent
// read unless stale). It commits nothing. The spec is checked by admission's spec
// steps, and the never-run reasons are those of its quota and capacity steps.
func (s *jobService) PlanJob(ctx context.Context, req *cohortv1.PlanJobRequest) (*cohortv1.PlanJobResponse, error) {
	job, err := s.adm.PlanJob(req.SpecYaml)
	if err != nil {
		return nil, toStatus(err)
	}
	return readCall(ctx, s.b, s.cfg, func() (*cohortv1.PlanJobResponse, error) {
		warnings, err := s.cfg.Preflight.check(ctx, req.SpecYaml)
		if err != nil {
			return nil, err
		}
		snap := s.b.State().Snapshot()
		never, err := s.adm.NeverRuns(snap, job)
		if err != nil {
			return nil, err
		}
		if s.cfg.RefuseWithoutNodes {
			none, err := noNodes(snap)
			if err != nil {
				return nil, err
			}
			never = append(never, none...)
		}
		out, err := planJob(snap, job, never)
		if err != nil {
			return nil, err
		}
		out.Warnings = warnings
		return out, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.PlanJobResponse, error) {
		return cohortv1.NewJobServiceClient(c).PlanJob(ctx, req)
	})
}

// planJob answers a dry run of job on snap; never says why the job can never run.
func planJob(snap *state.StateSnapshot, job *cohortv1.Job, never []string) (*cohortv1.PlanJobResponse, error) {
	cluster := scheduler.NewCluster(snap)
	plan := cluster.Place(job)
	out := &cohortv1.PlanJobResponse{Feasible: plan.Feasible(), NeverFits: len(never) > 0, Preemptions: []string{}}
	out.Reasons = append(slices.Clone(never), plan.Reasons...)
	if !plan.Feasible() && len(never) == 0 {
		running, err := scheduler.RunningJobs(snap)
		if err != nil {
			return nil, err
		}
		if shrinks, victims, p, ok := cluster.PreemptElastic(job, running); ok {
			// Placeable by shrinking lower-priority elastic jobs or evicting gangs: the
			// reasons say what is short without them, the placements are those after.
			out.Feasible, plan = true, p
			out.Preemptions = append(out.Preemptions, victims...)
			for _, rs := range shrinks {
				out.Shrinks = append(out.Shrinks, fmt.Sprintf("%s: %d workers", rs.JobID, len(rs.Remove)))
			}
		}
	}
	out.Notes = plan.Notes
	for _, a := range plan.Allocations {
		task := "worker"
		if a.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
			task = "ps"
		}
		name := fmt.Sprintf("%s %d", task, a.Index)
		if a.Replica > 0 {
			name += " backup"
		}
		out.Placements = append(out.Placements, &cohortv1.PlannedTask{
			Task: name, NodeId: a.NodeId, Resources: a.Resources})
	}
	return out, nil
}

// waitCatchUp waits until ws fires, until, or ctx ends; only ctx ending is an error.
func waitCatchUp(ctx context.Context, ws memdb.WatchSet, until time.Time) error {
	wctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	_ = ws.WatchCtx(wctx)
	return ctx.Err()
}

func lookupJob(store *state.Store, ws memdb.WatchSet, id string) (*cohortv1.Job, error) {
	job, err := store.JobByID(ws, id)
	if err != nil {
		return nil, err
	}
	if job == nil {
		return nil, fmt.Errorf("%w: job %q", fsm.ErrNotFound, id)
	}
	return job, nil
}

func checkID(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: %s is required", ErrInvalidArgument, field)
	case len(id) > maxIDLen:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalidArgument, field, maxIDLen)
	}
	return nil
}

func jobStateName(s cohortv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}
