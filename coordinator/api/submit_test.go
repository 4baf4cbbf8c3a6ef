package api

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// parseFields is a spec parser for admission tests: "NAME [workers=N] [gpus=N]
// [namespace=NS]" gives a job of 100m/1MiB tasks (one shard); "" as NAME gives a
// template without a name, "nil" none at all.
func parseFields(spec []byte) (*cohortv1.Job, error) {
	f := strings.Fields(string(spec))
	if len(f) == 0 || f[0] == "bad" {
		return nil, errors.New("spec.yaml:1: metadata.name: required\nspec.yaml:2: spec.model: unknown field")
	}
	if f[0] == "nil" {
		return nil, nil
	}
	job := &cohortv1.Job{Name: strings.Trim(f[0], `"`), WorkerCount: 1, ShardCount: 1,
		WorkerResources: &cohortv1.Resources{CpuMillis: 100, MemoryBytes: 1 << 20},
		ShardResources:  &cohortv1.Resources{CpuMillis: 100, MemoryBytes: 1 << 20}}
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		if k == "namespace" {
			job.Namespace = v
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("spec.yaml:1: %s: %w", k, err)
		}
		switch k {
		case "workers":
			job.WorkerCount = int32(n)
		case "gpus":
			job.WorkerResources.Gpus = int32(n)
		}
	}
	return job, nil
}

// admissionCluster is an FSM backend with one 4-GPU node (worker and paramserver) and a
// 2-GPU quota on namespace "team-a".
func admissionCluster(t *testing.T) (*fsmBackend, cohortv1.JobServiceServer) {
	t.Helper()
	b := newBackend(t)
	ctx := context.Background()
	if _, err := NewAgentService(b, Config{}).RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: &cohortv1.Node{
		Id: "n1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER},
		DataAddress: "127.0.0.1:1", Capacity: &cohortv1.Resources{CpuMillis: 8000, MemoryBytes: 8 << 30, Gpus: 4},
	}}); err != nil {
		t.Fatal(err)
	}
	svc := NewJobService(b, Config{ParseSpec: parseFields})
	if _, err := svc.SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "team-a", Limit: &cohortv1.Resources{Gpus: 2}}}); err != nil {
		t.Fatal(err)
	}
	return b, svc
}

// TestSubmitJobCodesAndMessages pins the code and the whole message of every refusal
// SubmitJob gives, and what an accepted submission is filled with.
func TestSubmitJobCodesAndMessages(t *testing.T) {
	const (
		quotaMsg = `invalid argument: job "q" can never run: namespace "team-a" quota: the job alone needs ` +
			`(cpu 400m, memory 4.0MiB, gpus 3): gpus 3 > 2`
		neverMsg = `invalid argument: job "big" can never fit the registered nodes: workers: each needs ` +
			`(cpu 100m, memory 1.0MiB, gpus 8) but the largest registered worker node has (cpu 8000m, memory 8.0GiB, gpus 4) ` +
			`(submit with --wait-for-capacity to wait for more nodes)`
	)
	tests := []struct {
		name     string
		noParser bool
		req      *cohortv1.SubmitJobRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "empty spec", req: &cohortv1.SubmitJobRequest{},
			wantCode: codes.InvalidArgument, wantMsg: "invalid argument: spec_yaml is empty"},
		{name: "spec too large", req: &cohortv1.SubmitJobRequest{SpecYaml: make([]byte, DefaultMaxSpecBytes+1)},
			wantCode: codes.InvalidArgument, wantMsg: "invalid argument: spec is 1048577 bytes, limit 1048576"},
		{name: "long key before the spec", req: &cohortv1.SubmitJobRequest{IdempotencyKey: strings.Repeat("k", 257)},
			wantCode: codes.InvalidArgument, wantMsg: "invalid argument: idempotency_key is longer than 256 bytes"},
		{name: "no parser", noParser: true, req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("x")},
			wantCode: codes.Internal, wantMsg: "api: no spec parser configured"},
		{name: "invalid spec", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("bad")}, wantCode: codes.InvalidArgument,
			wantMsg: "invalid job spec:\nspec.yaml:1: metadata.name: required\nspec.yaml:2: spec.model: unknown field"},
		{name: "no name", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte(`""`)},
			wantCode: codes.InvalidArgument, wantMsg: "invalid argument: spec has no metadata.name"},
		{name: "no template", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("nil")},
			wantCode: codes.InvalidArgument, wantMsg: "invalid argument: spec has no metadata.name"},
		{name: "over quota alone", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("q workers=3 gpus=1 namespace=team-a")},
			wantCode: codes.InvalidArgument, wantMsg: quotaMsg},
		{name: "over quota alone, even waiting for capacity",
			req:      &cohortv1.SubmitJobRequest{SpecYaml: []byte("q workers=3 gpus=1 namespace=team-a"), WaitForCapacity: true},
			wantCode: codes.InvalidArgument, wantMsg: quotaMsg},
		{name: "never fits", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("big gpus=8")},
			wantCode: codes.InvalidArgument, wantMsg: neverMsg},
		{name: "quota is checked before capacity",
			req:      &cohortv1.SubmitJobRequest{SpecYaml: []byte("q workers=5 gpus=1 namespace=team-a")},
			wantCode: codes.InvalidArgument, wantMsg: `invalid argument: job "q" can never run: namespace "team-a" quota: ` +
				`the job alone needs (cpu 600m, memory 6.0MiB, gpus 5): gpus 5 > 2`},
		{name: "never fits, waiting for capacity", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("big gpus=8"), WaitForCapacity: true}},
		{name: "fits", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("Attrition_MLP workers=2 gpus=1"), IdempotencyKey: "k1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := admissionCluster(t)
			parse := parseFields
			if tt.noParser {
				parse = nil
			}
			svc := NewJobService(b, Config{ParseSpec: parse})
			resp, err := svc.SubmitJob(context.Background(), tt.req)
			if status.Code(err) != tt.wantCode || status.Convert(err).Message() != tt.wantMsg {
				t.Fatalf("err %v\nwant %v %q", err, tt.wantCode, tt.wantMsg)
			}
			jobs, _ := b.State().Jobs(nil)
			if err != nil {
				if len(jobs) != 0 {
					t.Fatalf("a refused submission stored %v", jobs)
				}
				return
			}
			j := resp.Job
			if !resp.Created || len(jobs) != 1 || j.State != cohortv1.JobState_JOB_STATE_PENDING || j.Namespace != "default" ||
				string(j.SpecYaml) != string(tt.req.SpecYaml) || j.SubmitTimeUnixNano == 0 ||
				!regexp.MustCompile(`^[a-z0-9-]+-[0-9a-f]{8}$`).MatchString(j.Id) {
				t.Fatalf("accepted job %v (stored %d)", j, len(jobs))
			}
			if tt.req.IdempotencyKey != "" && j.IdempotencyKey != tt.req.IdempotencyKey {
				t.Fatalf("key %q, want the caller's %q", j.IdempotencyKey, tt.req.IdempotencyKey)
			}
			if tt.req.IdempotencyKey == "" && !regexp.MustCompile(`^auto-[0-9a-f]{32}$`).MatchString(j.IdempotencyKey) {
				t.Fatalf("minted key %q", j.IdempotencyKey)
			}
			if tt.name == "fits" && !strings.HasPrefix(j.Id, "attrition-mlp-") {
				t.Fatalf("id %q not derived from the name", j.Id)
			}
		})
	}
}

// TestSubmitJobIdempotentRetry: a retry with the same key returns the first job, not
// created, and stores nothing new, even when the retried spec differs.
func TestSubmitJobIdempotentRetry(t *testing.T) {
	b, svc := admissionCluster(t)
	ctx := context.Background()
	first, err := svc.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("retry"), IdempotencyKey: "k-retry"})
	if err != nil || !first.Created {
		t.Fatalf("first: %v %v", first, err)
	}
	for _, spec := range []string{"retry", "retry workers=2"} {
		again, err := svc.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(spec), IdempotencyKey: "k-retry"})
		if err != nil || again.Created || again.Job.Id != first.Job.Id || again.Job.WorkerCount != 1 {
			t.Fatalf("retry with %q: %v %v, want the first job %s", spec, again, err, first.Job.Id)
		}
	}
	if jobs, _ := b.State().Jobs(nil); len(jobs) != 1 {
		t.Fatalf("%d jobs stored, want 1", len(jobs))
	}
	// Without a key every submission is a new job.
	for range 2 {
		if r, err := svc.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("retry")}); err != nil || !r.Created {
			t.Fatalf("keyless: %v %v", r, err)
		}
	}
	if jobs, _ := b.State().Jobs(nil); len(jobs) != 3 {
		t.Fatalf("%d jobs stored, want 3", len(jobs))
	}
}

// followerBackend is an fsmBackend whose writes fail as on a follower.
type followerBackend struct{ *fsmBackend }

func (followerBackend) Apply(context.Context, *cohortv1.Command) (any, error) {
	return nil, fmt.Errorf("%w; leader is n2", server.ErrNotLeader)
}

// leaderConn is the leader's API as a follower's forwarder sees it: it records every
// SubmitJob it receives and answers the first unavailable ones Unavailable.
type leaderConn struct {
	mu          sync.Mutex
	unavailable int
	reqs        []*cohortv1.SubmitJobRequest
	forwarded   []bool
}

func (c *leaderConn) LeaderConn() (grpc.ClientConnInterface, error) { return c, nil }

func (c *leaderConn) Invoke(ctx context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	req, ok := args.(*cohortv1.SubmitJobRequest)
	if !ok || method != cohortv1.JobService_SubmitJob_FullMethodName {
		return status.Errorf(codes.Unimplemented, "%s", method)
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	c.reqs = append(c.reqs, proto.Clone(req).(*cohortv1.SubmitJobRequest))
	c.forwarded = append(c.forwarded, len(md.Get(forwardedHeader)) > 0)
	if len(c.reqs) <= c.unavailable {
		return status.Error(codes.Unavailable, "leadership moving")
	}
	proto.Merge(reply.(*cohortv1.SubmitJobResponse), &cohortv1.SubmitJobResponse{
		Created: true, Job: &cohortv1.Job{Id: "from-leader", IdempotencyKey: req.IdempotencyKey}})
	return nil
}

func (c *leaderConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("leaderConn: no streams")
}

// TestSubmitJobForwarded: a follower forwards a submission to the leader with the
// caller's idempotency key, or with one key it minted, the same on every retry; a
// submission the follower refuses is not forwarded.
func TestSubmitJobForwarded(t *testing.T) {
	tests := []struct {
		name        string
		req         *cohortv1.SubmitJobRequest
		unavailable int
		wantCode    codes.Code
		wantSent    int
	}{
		{name: "caller's key", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("fwd"), IdempotencyKey: "k-caller"}, wantSent: 1},
		{name: "caller's key across retries", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("fwd"), IdempotencyKey: "k-caller", WaitForCapacity: true},
			unavailable: 2, wantSent: 3},
		{name: "minted key across retries", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("fwd")}, unavailable: 2, wantSent: 3},
		{name: "refused locally", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("bad")}, wantCode: codes.InvalidArgument},
		{name: "never fits locally", req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("big gpus=8")}, wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := admissionCluster(t)
			conn := &leaderConn{unavailable: tt.unavailable}
			svc := NewJobService(followerBackend{b}, Config{ParseSpec: parseFields, Forwarder: conn})
			req := proto.Clone(tt.req).(*cohortv1.SubmitJobRequest)
			resp, err := svc.SubmitJob(context.Background(), req)
			if status.Code(err) != tt.wantCode || len(conn.reqs) != tt.wantSent {
				t.Fatalf("err %v, %d forwarded; want %v, %d", err, len(conn.reqs), tt.wantCode, tt.wantSent)
			}
			if !proto.Equal(req, tt.req) {
				t.Fatalf("the caller's request was changed: %v", req)
			}
			if err != nil {
				return
			}
			key := conn.reqs[0].IdempotencyKey
			if tt.req.IdempotencyKey != "" && key != tt.req.IdempotencyKey {
				t.Fatalf("forwarded key %q, want the caller's %q", key, tt.req.IdempotencyKey)
			}
			if tt.req.IdempotencyKey == "" && !regexp.MustCompile(`^auto-[0-9a-f]{32}$`).MatchString(key) {
				t.Fatalf("minted key %q", key)
			}
			for i, r := range conn.reqs {
				if r.IdempotencyKey != key || string(r.SpecYaml) != string(tt.req.SpecYaml) || r.WaitForCapacity != tt.req.WaitForCapacity || !conn.forwarded[i] {
					t.Fatalf("forward %d: %v (forwarded header %v), want the request with key %q", i, r, conn.forwarded[i], key)
				}
			}
			if resp.Job.Id != "from-leader" || resp.Job.IdempotencyKey != key {
				t.Fatalf("response %v, want the leader's", resp)
			}
		})
	}
}

// TestPlanJobCodesAndReasons pins PlanJob's refusals (the same as SubmitJob's spec
// checks) and its never-fit reasons: the quota's first, then the capacity's.
func TestPlanJobCodesAndReasons(t *testing.T) {
	_, svc := admissionCluster(t)
	ctx := context.Background()
	refusals := []struct {
		spec     string
		wantCode codes.Code
		wantMsg  string
	}{
		{"", codes.InvalidArgument, "invalid argument: spec_yaml is empty"},
		{"bad", codes.InvalidArgument, "invalid job spec:\nspec.yaml:1: metadata.name: required\nspec.yaml:2: spec.model: unknown field"},
		{`""`, codes.InvalidArgument, "invalid argument: spec has no metadata.name"},
	}
	for _, r := range refusals {
		_, err := svc.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: []byte(r.spec)})
		if status.Code(err) != r.wantCode || status.Convert(err).Message() != r.wantMsg {
			t.Fatalf("plan %q: %v, want %v %q", r.spec, err, r.wantCode, r.wantMsg)
		}
	}
	if _, err := NewJobService(newBackend(t), Config{}).PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: []byte("x")}); status.Code(err) != codes.Internal {
		t.Fatalf("plan without a parser: %v", err)
	}

	plan, err := svc.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: []byte("both workers=3 gpus=8 namespace=team-a")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`namespace "team-a" quota: the job alone needs (cpu 400m, memory 4.0MiB, gpus 24): gpus 24 > 2`,
		"workers: each needs (cpu 100m, memory 1.0MiB, gpus 8) but the largest registered worker node has (cpu 8000m, memory 8.0GiB, gpus 4)",
	}
	if plan.Feasible || !plan.NeverFits || len(plan.Placements) != 0 || len(plan.Reasons) < 2 ||
		plan.Reasons[0] != want[0] || plan.Reasons[1] != want[1] {
		t.Fatalf("plan over quota and capacity: %v\nwant reasons starting %q", plan, want)
	}
	plan, err = svc.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: []byte("fits workers=2 gpus=2")})
	if err != nil || !plan.Feasible || plan.NeverFits || len(plan.Placements) != 3 || len(plan.Reasons) != 0 {
		t.Fatalf("plan of a fitting job: %v %v", plan, err)
	}
	if jobs, _ := svc.ListJobs(ctx, &cohortv1.ListJobsRequest{}); len(jobs.Jobs) != 0 {
		t.Fatalf("a plan stored %v", jobs.Jobs)
	}
}
