package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/scheduler"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// DefaultMaxSpecBytes is the default limit on a submitted spec.
const DefaultMaxSpecBytes = 1 << 20

// ErrRefused marks a submission admission refuses (a bad spec, a job that can never
// run). Its text is "invalid argument", the prefix the CLI has always shown.
var ErrRefused = errors.New("invalid argument")

// SpecError carries the spec parser's error; its message is the parser's, verbatim.
type SpecError struct{ Err error }

func (e *SpecError) Error() string { return "invalid job spec:\n" + e.Err.Error() }

// Unwrap returns ErrRefused and the parser's error.
func (e *SpecError) Unwrap() []error { return []error{ErrRefused, e.Err} }

// AdmissionError is an error of one admission step. Its message is the step's error,
// unchanged; Step names the step.
type AdmissionError struct {
	Step string
	Err  error
}

func (e *AdmissionError) Error() string { return e.Err.Error() }

// Unwrap returns the step's error.
func (e *AdmissionError) Unwrap() error { return e.Err }

// Submission is one job submission as admission sees it.
type Submission struct {
	// Spec is the job spec as submitted (YAML).
	Spec []byte
	// IdempotencyKey is the caller's key; admission fills it in when empty (once: a
	// second Admit of the same Submission keeps it), so a follower forwards the key the
	// leader will store.
	IdempotencyKey string
	// WaitForCapacity accepts a job that can never fit the registered nodes.
	WaitForCapacity bool
}

// AdmissionConfig configures an Admission.
type AdmissionConfig struct {
	// ParseSpec parses and validates a spec into a job template; its error message
	// reaches the user verbatim. Without it every submission fails (Internal).
	ParseSpec func(spec []byte) (*cohortv1.Job, error)
	// MaxSpecBytes bounds a spec; 0 means DefaultMaxSpecBytes.
	MaxSpecBytes int
	// Now stamps the submit time; nil means time.Now.
	Now func() time.Time
	// Logger receives refusals; nil means slog.Default().
	Logger *slog.Logger
}

// Admission turns a submission into the job to propose, as one ordered chain of named
// steps (nomad's job endpoint hooks are the model):
//
//	limits, parse, defaults, preflight  the spec alone
//	quota, capacity                     the job against the cluster's state
//	identify                            ID, submit time, state and idempotency key
//
// The first step that fails refuses the submission with an *AdmissionError naming it.
// The chain runs in the RPC handler before the job is proposed: everything it fills in
// (IDs, times, keys) is in the Raft entry, never made up by the FSM.
type Admission struct {
	spec   []admissionStep // the steps on the spec alone
	checks []checkStep     // the steps against the cluster's state
	steps  []admissionStep // every step, in order: spec, checks, identify
	logger *slog.Logger
}

// NewAdmission returns the admission chain of cfg.
func NewAdmission(cfg AdmissionConfig) *Admission {
	if cfg.MaxSpecBytes <= 0 {
		cfg.MaxSpecBytes = DefaultMaxSpecBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Admission{
		spec:   []admissionStep{limitsStep{max: cfg.MaxSpecBytes}, parseStep{parse: cfg.ParseSpec}, defaultsStep{}, preflightStep{}},
		checks: []checkStep{quotaStep{}, capacityStep{}},
		logger: cfg.Logger,
	}
	a.steps = append(a.steps, a.spec...)
	for _, c := range a.checks {
		a.steps = append(a.steps, c)
	}
	a.steps = append(a.steps, identifyStep{now: cfg.Now})
	return a
}

// Steps returns the names of the steps, in the order they run.
func (a *Admission) Steps() []string {
	var names []string
	for _, s := range a.steps {
		names = append(names, s.name())
	}
	return names
}

// Admit runs every step on sub against snap and returns the job to propose. It fills
// in sub.IdempotencyKey when empty.
func (a *Admission) Admit(snap scheduler.PolicySnapshot, sub *Submission) (*cohortv1.Job, error) {
	r := &admissionRun{sub: sub, snap: snap}
	for _, s := range a.steps {
		if err := s.admit(r); err != nil {
			return nil, a.refuse(s.name(), r.job, err)
		}
	}
	return r.job, nil
}

// PlanJob runs the spec steps on spec and returns the job a dry run places, with the
// plan's stable ID "plan-<name>".
func (a *Admission) PlanJob(spec []byte) (*cohortv1.Job, error) {
	r := &admissionRun{sub: &Submission{Spec: spec}}
	for _, s := range a.spec {
		if err := s.admit(r); err != nil {
			return nil, &AdmissionError{Step: s.name(), Err: err}
		}
	}
	r.job.Id = "plan-" + jobIDUnsafe.ReplaceAllString(strings.ToLower(r.job.Name), "-")
	return r.job, nil
}

// NeverRuns returns why job can never run on snap, by the steps that check it against
// the cluster's state, in their order (the quota's reasons first), whether or not the
// submission would wait for capacity. It returns nil when the job can run.
func (a *Admission) NeverRuns(snap scheduler.PolicySnapshot, job *cohortv1.Job) ([]string, error) {
	var reasons []string
	for _, c := range a.checks {
		rs, err := c.reasons(snap, job)
		if err != nil {
			return nil, &AdmissionError{Step: c.name(), Err: err}
		}
		reasons = append(reasons, rs...)
	}
	return reasons, nil
}

// refuse wraps step's error and logs the refusal.
func (a *Admission) refuse(step string, job *cohortv1.Job, err error) error {
	if errors.Is(err, ErrRefused) {
		a.logger.Info("job refused", "step", step, "job", job.GetName(), "namespace", job.GetNamespace(), "err", err)
	}
	return &AdmissionError{Step: step, Err: err}
}

// admissionRun is one submission going through the chain.
type admissionRun struct {
	sub  *Submission
	snap scheduler.PolicySnapshot
	job  *cohortv1.Job // set by the parse step
}

// admissionStep is one step of the chain: it checks the submission, or fills in r.job.
type admissionStep interface {
	name() string
	admit(r *admissionRun) error
}

// checkStep is a step that checks the job against the cluster's state: its reasons
// are what a dry run (PlanJob) reports.
type checkStep interface {
	admissionStep
	reasons(snap scheduler.PolicySnapshot, job *cohortv1.Job) ([]string, error)
}

// limitsStep refuses an empty spec or one over the size limit (before it is parsed).
type limitsStep struct{ max int }

func (limitsStep) name() string { return "limits" }

func (s limitsStep) admit(r *admissionRun) error {
	switch n := len(r.sub.Spec); {
	case n == 0:
		return fmt.Errorf("%w: spec_yaml is empty", ErrRefused)
	case n > s.max:
		return fmt.Errorf("%w: spec is %d bytes, limit %d", ErrRefused, n, s.max)
	}
	return nil
}

// parseStep parses the spec with the configured parser into a fresh job.
type parseStep struct {
	parse func([]byte) (*cohortv1.Job, error)
}

func (parseStep) name() string { return "parse" }

func (s parseStep) admit(r *admissionRun) error {
	if s.parse == nil {
		return errors.New("api: no spec parser configured") // the message the API has always given
	}
	tmpl, err := s.parse(r.sub.Spec)
	if err != nil {
		return &SpecError{Err: err}
	}
	r.job = &cohortv1.Job{}
	if tmpl != nil {
		r.job = proto.Clone(tmpl).(*cohortv1.Job) // the parser may hand out a shared template
	}
	return nil
}

// defaultsStep fills in what a spec may leave out: the namespace.
type defaultsStep struct{}

func (defaultsStep) name() string { return "defaults" }

func (defaultsStep) admit(r *admissionRun) error {
	if r.job.Namespace == "" {
		r.job.Namespace = "default"
	}
	return nil
}

// preflightStep refuses a parsed job that cannot be identified: one without a name.
type preflightStep struct{}

func (preflightStep) name() string { return "preflight" }

func (preflightStep) admit(r *admissionRun) error {
	if r.job.Name == "" {
		return fmt.Errorf("%w: spec has no metadata.name", ErrRefused)
	}
	return nil
}

// quotaStep refuses a job that alone exceeds its namespace's quota, even when it would
// wait for capacity: no amount of new nodes lets it run.
type quotaStep struct{}

func (quotaStep) name() string { return "quota" }

func (quotaStep) reasons(snap scheduler.PolicySnapshot, job *cohortv1.Job) ([]string, error) {
	return scheduler.ExceedsQuota(snap, job)
}

func (s quotaStep) admit(r *admissionRun) error {
	reasons, err := s.reasons(r.snap, r.job)
	if err != nil {
		return err
	}
	if len(reasons) > 0 {
		return fmt.Errorf("%w: job %q can never run: %s", ErrRefused, r.job.Name, strings.Join(reasons, "; "))
	}
	return nil
}

// capacityStep refuses a job that can never fit the registered nodes, unless the
// submission waits for capacity.
type capacityStep struct{}

func (capacityStep) name() string { return "capacity" }

func (capacityStep) reasons(snap scheduler.PolicySnapshot, job *cohortv1.Job) ([]string, error) {
	return scheduler.NeverFits(snap, job)
}

func (s capacityStep) admit(r *admissionRun) error {
	if r.sub.WaitForCapacity {
		return nil
	}
	reasons, err := s.reasons(r.snap, r.job)
	if err != nil {
		return err
	}
	if len(reasons) > 0 {
		return fmt.Errorf("%w: job %q can never fit the registered nodes: %s (submit with --wait-for-capacity to wait for more nodes)",
			ErrRefused, r.job.Name, strings.Join(reasons, "; "))
	}
	return nil
}

// identifyStep fills in what the FSM must not make up: the job's ID, submit time,
// state and spec, and the idempotency key (the caller's, or one minted once per
// submission).
type identifyStep struct{ now func() time.Time }

func (identifyStep) name() string { return "identify" }

func (s identifyStep) admit(r *admissionRun) error {
	if r.sub.IdempotencyKey == "" {
		r.sub.IdempotencyKey = "auto-" + randomHex(16)
	}
	r.job.Id = newJobID(r.job.Name)
	r.job.SpecYaml = r.sub.Spec
	r.job.SubmitTimeUnixNano = s.now().UnixNano()
	r.job.State = cohortv1.JobState_JOB_STATE_PENDING
	r.job.IdempotencyKey = r.sub.IdempotencyKey
	return nil
}

// jobIDUnsafe matches characters a job ID does not keep from the job's name.
var jobIDUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// newJobID returns "<name>-<8 hex>" with the name reduced to [a-z0-9-].
func newJobID(name string) string {
	base := strings.Trim(jobIDUnsafe.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if base == "" {
		base = "job"
	}
	if len(base) > 63 {
		base = base[:63]
	}
	return base + "-" + randomHex(4)
}

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b)
}
