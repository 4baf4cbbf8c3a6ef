package server

import (
	"errors"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// fakeState is a scheduler.PolicySnapshot of nodes and quotas only.
type fakeState struct {
	nodes  []*cohortv1.Node
	quotas []*cohortv1.Quota
	err    error
}

func (f fakeState) Nodes(memdb.WatchSet) ([]*cohortv1.Node, error) { return f.nodes, f.err }
func (f fakeState) AllocsByNode(memdb.WatchSet, string) ([]*cohortv1.Allocation, error) {
	return nil, f.err
}
func (f fakeState) Quotas(memdb.WatchSet) ([]*cohortv1.Quota, error) { return f.quotas, f.err }
func (f fakeState) Queues(memdb.WatchSet) ([]*cohortv1.Queue, error) { return nil, f.err }
func (f fakeState) JobsByState(memdb.WatchSet, cohortv1.JobState) ([]*cohortv1.Job, error) {
	return nil, f.err
}
func (f fakeState) AllocsByJob(memdb.WatchSet, string) ([]*cohortv1.Allocation, error) {
	return nil, f.err
}

// oneNode is a cluster of one 4-GPU node with a 2-GPU quota on "team-a".
var oneNode = fakeState{
	nodes: []*cohortv1.Node{{Id: "n1", Status: cohortv1.NodeStatus_NODE_STATUS_READY,
		Roles:    []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER},
		Capacity: &cohortv1.Resources{CpuMillis: 8000, MemoryBytes: 8 << 30, Gpus: 4}}},
	quotas: []*cohortv1.Quota{{Namespace: "team-a", Limit: &cohortv1.Resources{Gpus: 2}}},
}

// testJob is a job of workers tasks with gpus GPUs each and one shard.
func testJob(name, ns string, workers, gpus int32) *cohortv1.Job {
	return &cohortv1.Job{Name: name, Namespace: ns, WorkerCount: workers, ShardCount: 1,
		WorkerResources: &cohortv1.Resources{CpuMillis: 100, MemoryBytes: 1 << 20, Gpus: gpus},
		ShardResources:  &cohortv1.Resources{CpuMillis: 100, MemoryBytes: 1 << 20}}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestAdmissionStepsOneByOne runs every step on its own.
func TestAdmissionStepsOneByOne(t *testing.T) {
	parseErr := errors.New("spec.yaml:3: spec.model: unknown field")
	tmpl := testJob("attrition-mlp", "", 1, 0)
	clock := time.Unix(1_700_000_000, 5)
	tests := []struct {
		name    string
		step    admissionStep
		sub     Submission
		snap    fakeState
		job     *cohortv1.Job
		wantErr string // the whole message; "" accepts
		refused bool   // the error is a refusal (ErrRefused)
		check   func(t *testing.T, r *admissionRun)
	}{
		{name: "limits: empty", step: limitsStep{max: 4}, wantErr: "invalid argument: spec_yaml is empty", refused: true},
		{name: "limits: too large", step: limitsStep{max: 4}, sub: Submission{Spec: []byte("12345")},
			wantErr: "invalid argument: spec is 5 bytes, limit 4", refused: true},
		{name: "limits: at the limit", step: limitsStep{max: 4}, sub: Submission{Spec: []byte("1234")}},

		{name: "parse: no parser", step: parseStep{}, sub: Submission{Spec: []byte("x")}, wantErr: "api: no spec parser configured"},
		{name: "parse: the parser's error verbatim", step: parseStep{parse: func([]byte) (*cohortv1.Job, error) { return nil, parseErr }},
			sub: Submission{Spec: []byte("x")}, wantErr: "invalid job spec:\n" + parseErr.Error(), refused: true},
		{name: "parse: a copy of the template", step: parseStep{parse: func([]byte) (*cohortv1.Job, error) { return tmpl, nil }},
			sub: Submission{Spec: []byte("x")}, check: func(t *testing.T, r *admissionRun) {
				if r.job == tmpl || r.job.Name != "attrition-mlp" {
					t.Fatalf("job %p %v, want a copy of the template %p", r.job, r.job, tmpl)
				}
			}},
		{name: "parse: no template is an empty job", step: parseStep{parse: func([]byte) (*cohortv1.Job, error) { return nil, nil }},
			sub: Submission{Spec: []byte("x")}, check: func(t *testing.T, r *admissionRun) {
				if r.job == nil || r.job.Name != "" {
					t.Fatalf("job %v", r.job)
				}
			}},

		{name: "defaults: namespace", step: defaultsStep{}, job: testJob("j", "", 1, 0), check: func(t *testing.T, r *admissionRun) {
			if r.job.Namespace != "default" {
				t.Fatalf("namespace %q", r.job.Namespace)
			}
		}},
		{name: "defaults: keeps a namespace", step: defaultsStep{}, job: testJob("j", "team-a", 1, 0), check: func(t *testing.T, r *admissionRun) {
			if r.job.Namespace != "team-a" {
				t.Fatalf("namespace %q", r.job.Namespace)
			}
		}},

		{name: "preflight: no name", step: preflightStep{}, job: &cohortv1.Job{},
			wantErr: "invalid argument: spec has no metadata.name", refused: true},
		{name: "preflight: named", step: preflightStep{}, job: testJob("j", "default", 1, 0)},

		{name: "quota: over alone", step: quotaStep{}, snap: oneNode, job: testJob("q", "team-a", 3, 1), refused: true,
			wantErr: `invalid argument: job "q" can never run: namespace "team-a" quota: the job alone needs (cpu 400m, memory 4.0MiB, gpus 3): gpus 3 > 2`},
		{name: "quota: over alone, waiting for capacity", step: quotaStep{}, snap: oneNode, sub: Submission{WaitForCapacity: true},
			job: testJob("q", "team-a", 3, 1), refused: true,
			wantErr: `invalid argument: job "q" can never run: namespace "team-a" quota: the job alone needs (cpu 400m, memory 4.0MiB, gpus 3): gpus 3 > 2`},
		{name: "quota: within", step: quotaStep{}, snap: oneNode, job: testJob("q", "team-a", 2, 1)},
		{name: "quota: another namespace's", step: quotaStep{}, snap: oneNode, job: testJob("q", "default", 3, 1)},
		{name: "quota: state error", step: quotaStep{}, snap: fakeState{err: errors.New("boom")}, job: testJob("q", "default", 1, 0),
			wantErr: "scheduler: read quotas: boom"},

		{name: "capacity: never fits", step: capacityStep{}, snap: oneNode, job: testJob("big", "default", 1, 8), refused: true,
			wantErr: `invalid argument: job "big" can never fit the registered nodes: workers: each needs (cpu 100m, memory 1.0MiB, gpus 8) ` +
				`but the largest registered worker node has (cpu 8000m, memory 8.0GiB, gpus 4) (submit with --wait-for-capacity to wait for more nodes)`},
		{name: "capacity: waiting for capacity", step: capacityStep{}, snap: oneNode, sub: Submission{WaitForCapacity: true},
			job: testJob("big", "default", 1, 8)},
		{name: "capacity: fits", step: capacityStep{}, snap: oneNode, job: testJob("ok", "default", 4, 1)},
		{name: "capacity: no node registered yet", step: capacityStep{}, job: testJob("big", "default", 1, 8)},
		{name: "capacity: state error", step: capacityStep{}, snap: fakeState{err: errors.New("boom")}, job: testJob("q", "default", 1, 0),
			wantErr: "scheduler: read nodes: boom"},

		{name: "identify: the caller's key", step: identifyStep{now: func() time.Time { return clock }},
			sub: Submission{Spec: []byte("spec"), IdempotencyKey: "k1"}, job: testJob("Attrition MLP", "default", 1, 0),
			check: func(t *testing.T, r *admissionRun) {
				j := r.job
				if !regexp.MustCompile(`^attrition-mlp-[0-9a-f]{8}$`).MatchString(j.Id) || j.IdempotencyKey != "k1" ||
					string(j.SpecYaml) != "spec" || j.SubmitTimeUnixNano != clock.UnixNano() || j.State != cohortv1.JobState_JOB_STATE_PENDING {
					t.Fatalf("job %v", j)
				}
			}},
		{name: "identify: a minted key, kept in the submission", step: identifyStep{now: time.Now},
			job: testJob("!!!", "default", 1, 0), check: func(t *testing.T, r *admissionRun) {
				if !regexp.MustCompile(`^auto-[0-9a-f]{32}$`).MatchString(r.job.IdempotencyKey) || r.sub.IdempotencyKey != r.job.IdempotencyKey {
					t.Fatalf("key %q, submission's %q", r.job.IdempotencyKey, r.sub.IdempotencyKey)
				}
				if !strings.HasPrefix(r.job.Id, "job-") {
					t.Fatalf("id %q of a name without ID characters", r.job.Id)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := tt.sub
			r := &admissionRun{sub: &sub, snap: tt.snap, job: tt.job}
			err := tt.step.admit(r)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Fatalf("err %v\nwant %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrRefused) != tt.refused {
				t.Fatalf("refusal %v, want %v (%v)", errors.Is(err, ErrRefused), tt.refused, err)
			}
			var se *SpecError
			if errors.As(err, &se) && !errors.Is(err, parseErr) {
				t.Fatalf("spec error %v lost the parser's error", err)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

// TestAdmitRunsTheChain: Admit runs the steps in order, a refusal names the step that
// refused and proposes nothing, and the key is filled in once per submission.
func TestAdmitRunsTheChain(t *testing.T) {
	parsed := 0
	parse := func(spec []byte) (*cohortv1.Job, error) {
		parsed++
		switch s := string(spec); s {
		case "bad":
			return nil, errors.New("spec.yaml:1: bad")
		case "unnamed":
			return &cohortv1.Job{}, nil
		case "over-quota":
			return testJob("q", "team-a", 3, 1), nil
		case "quota-and-capacity":
			return testJob("q", "team-a", 5, 8), nil
		case "never-fits":
			return testJob("big", "", 1, 8), nil
		default:
			return testJob(s, "", 1, 1), nil
		}
	}
	a := NewAdmission(AdmissionConfig{ParseSpec: parse, MaxSpecBytes: 64, Logger: discard()})
	if got, want := a.Steps(), []string{"limits", "parse", "defaults", "preflight", "quota", "capacity", "identify"}; !slices.Equal(got, want) {
		t.Fatalf("steps %q, want %q", got, want)
	}
	refusals := []struct {
		spec string
		wait bool
		step string
	}{
		{"", false, "limits"},
		{strings.Repeat("x", 65), false, "limits"},
		{"bad", false, "parse"},
		{"unnamed", false, "preflight"},
		{"over-quota", true, "quota"},
		{"quota-and-capacity", false, "quota"},
		{"never-fits", false, "capacity"},
	}
	for _, r := range refusals {
		sub := &Submission{Spec: []byte(r.spec), WaitForCapacity: r.wait}
		job, err := a.Admit(oneNode, sub)
		var ae *AdmissionError
		if job != nil || !errors.As(err, &ae) || ae.Step != r.step || !errors.Is(err, ErrRefused) || sub.IdempotencyKey != "" {
			t.Fatalf("Admit(%q): %v, %v (key %q), want a refusal by %s", r.spec, job, err, sub.IdempotencyKey, r.step)
		}
	}
	if parsed != 5 {
		t.Fatalf("parsed %d specs, want 5 (limits refuse before parsing)", parsed)
	}

	sub := &Submission{Spec: []byte("never-fits"), WaitForCapacity: true}
	first, err := a.Admit(oneNode, sub)
	if err != nil || first.Namespace != "default" || first.State != cohortv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("Admit waiting for capacity: %v %v", first, err)
	}
	again, err := a.Admit(oneNode, sub)
	if err != nil || again.IdempotencyKey != first.IdempotencyKey || sub.IdempotencyKey != first.IdempotencyKey {
		t.Fatalf("second Admit of one submission: key %q, first %q, submission %q (%v)", again.GetIdempotencyKey(), first.IdempotencyKey, sub.IdempotencyKey, err)
	}
}

// TestAdmissionPlan: a dry run checks the spec with the same steps and reports every
// never-run reason, the quota's first, waiting for capacity or not.
func TestAdmissionPlan(t *testing.T) {
	a := NewAdmission(AdmissionConfig{ParseSpec: func(spec []byte) (*cohortv1.Job, error) {
		if string(spec) == "unnamed" {
			return &cohortv1.Job{}, nil
		}
		return testJob("Attrition MLP", "team-a", 5, 8), nil
	}, Logger: discard()})
	for spec, step := range map[string]string{"": "limits", "unnamed": "preflight"} {
		var ae *AdmissionError
		if _, err := a.PlanJob([]byte(spec)); !errors.As(err, &ae) || ae.Step != step {
			t.Fatalf("PlanJob(%q): %v, want a refusal by %s", spec, err, step)
		}
	}
	job, err := a.PlanJob([]byte("x"))
	if err != nil || job.Id != "plan-attrition-mlp" || job.Namespace != "team-a" || job.IdempotencyKey != "" {
		t.Fatalf("PlanJob: %v %v", job, err)
	}
	reasons, err := a.NeverRuns(oneNode, job)
	if err != nil || len(reasons) != 2 || !strings.HasPrefix(reasons[0], `namespace "team-a" quota`) || !strings.HasPrefix(reasons[1], "workers: each needs") {
		t.Fatalf("NeverRuns: %q %v", reasons, err)
	}
	if reasons, err := a.NeverRuns(fakeState{}, testJob("ok", "default", 1, 0)); err != nil || reasons != nil {
		t.Fatalf("NeverRuns of a job that fits: %q %v", reasons, err)
	}
	var ae *AdmissionError
	if _, err := a.NeverRuns(fakeState{err: errors.New("boom")}, job); !errors.As(err, &ae) || ae.Step != "quota" {
		t.Fatalf("NeverRuns on a failing state: %v", err)
	}
}
