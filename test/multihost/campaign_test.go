package multihost

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cohort-dev/cohort/internal/netns"
	"github.com/cohort-dev/cohort/storage"
)

// Fault kinds the campaign draws from.
const (
	faultIsolateLeader = "isolate-leader"      // the leader cut from the other coordinators and the node agents
	faultCutFollower   = "cut-follower"        // a follower cut from the other coordinators
	faultOneWay        = "one-way-leader"      // the leader's packets to the followers dropped, or theirs to it
	faultLossLeader    = "loss-20pct-leader"   // 20% of the packets to and from the leader's host dropped
	faultKillRestart   = "kill9-restart-coord" // SIGKILL a coordinator (the leader half the time), restart it
	faultPauseWorker   = "pause-worker"        // SIGSTOP a worker, SIGCONT it
)

var faultKinds = []string{faultIsolateLeader, faultCutFollower, faultOneWay, faultLossLeader, faultKillRestart, faultPauseWorker}

// campaignConfig sizes a campaign.
type campaignConfig struct {
	seed       uint64
	faults     int
	holdMin    time.Duration // how long a fault lasts, drawn in [holdMin, holdMax]
	holdMax    time.Duration
	cliTimeout time.Duration // a CLI call still running after this is killed (the user gives up)
	recoverBy  time.Duration // after a heal, the cluster must be whole again within this
	drainBy    time.Duration // after the last fault, jobs must keep ending at least this often
	quiet      time.Duration // fault-free time before each fault
	soak       time.Duration // fault-free time before the first fault: step-downs a busy host causes alone
	submitters int
	// train runs one long elastic training job throughout (the training probe:
	// throughput before and during each fault, steps lost); on in the long form and
	// with COHORT_CAMPAIGN_TRAIN=1.
	train bool
}

// TestChaosFaultCampaign runs 3 coordinators, 2 parameter-server nodes and 2 workers on
// separate test hosts (network namespaces; mutual TLS set up as the README's admin
// walkthrough does) with a client host submitting uniquely named training jobs,
// changing a quota and reading both back, while faults drawn from a seed hit the
// cluster: the leader isolated, a follower cut off, a one-way partition, 20% loss on
// the leader's link, a coordinator killed with SIGKILL and restarted, a worker paused.
// The history is checked for linearizability (porcupine), and what must hold is checked
// from outside: no acknowledged submission lost or duplicated, nothing acknowledged by
// an isolated coordinator, one leader per list-peers answer, jobs end (never RUNNING
// without progress for 2x the node TTL), a worker paused past the TTL marked down
// within TTL + 2 s, every succeeded job's checkpoint verifies, and the coordinators'
// Raft logs agree. It logs the time to recover per fault kind.
//
// make test runs one fault of each kind (about 1 minute); COHORT_CHAOS=1 (make chaos,
// make campaign) runs 3 minutes without a fault, then 100 faults with holds up to 20 s
// (about 40 minutes). COHORT_CAMPAIGN_SEED replays a campaign's schedule,
// COHORT_CAMPAIGN_FAULTS sets the number of faults, COHORT_CAMPAIGN_REPORT names a file
// for the JSON summary, COHORT_CAMPAIGN_KEEP=1 keeps the logs of a passing run, and
// COHORT_CAMPAIGN_TRAIN=1 adds the long form's training probe (trainprobe_test.go) to
// a short one.
func TestChaosFaultCampaign(t *testing.T) {
	cfg := campaignConfig{seed: rand.Uint64(), faults: len(faultKinds), holdMin: 3 * time.Second, holdMax: 5 * time.Second,
		cliTimeout: 12 * time.Second, recoverBy: 60 * time.Second, drainBy: 2 * nodeTTL, quiet: 2 * time.Second, submitters: 2}
	if os.Getenv("COHORT_CHAOS") != "" {
		// ~19 s a fault: about 40 minutes in all, inside make chaos's 60-minute limit.
		cfg.faults, cfg.holdMin, cfg.holdMax, cfg.cliTimeout, cfg.recoverBy = 100, 2*time.Second, 20*time.Second, 40*time.Second, 120*time.Second
		cfg.quiet, cfg.soak, cfg.submitters, cfg.train = 3*time.Second, 3*time.Minute, 1, true
	}
	if os.Getenv("COHORT_CAMPAIGN_TRAIN") == "1" {
		cfg.train = true
	}
	if s := os.Getenv("COHORT_CAMPAIGN_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("COHORT_CAMPAIGN_SEED=%q: %v", s, err)
		}
		cfg.seed = v
	}
	if s := os.Getenv("COHORT_CAMPAIGN_FAULTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("COHORT_CAMPAIGN_FAULTS=%q: want a positive count", s)
		}
		cfg.faults = v
	}
	runCampaign(t, cfg)
}

// faultRecord is one injected fault and what the client saw.
type faultRecord struct {
	Kind   string `json:"kind"`
	Desc   string `json:"desc"`
	HoldMS int64  `json:"hold_ms"`
	// RecoverMS is from the injection to the first acknowledgement of a submission a
	// client started at the injection (retrying with a new CLI when one fails or is
	// killed after cliTimeout).
	RecoverMS int64 `json:"recover_ms"`
	// AfterHealMS is from the heal to the cluster being whole again: one leader, every
	// coordinator answering list-peers, every node agent ready, a submission acknowledged.
	AfterHealMS int64 `json:"after_heal_ms"`
	// ProbeAttempts counts the CLI submissions the recovery took; ProbeKilled those
	// killed at cliTimeout (they hung), ProbeFailed those that exited with an error.
	ProbeAttempts int `json:"probe_attempts"`
	ProbeKilled   int `json:"probe_killed"`
	ProbeFailed   int `json:"probe_failed"`
	// NewLeaderMS is, for a fault that takes the leader away (isolated, one-way cut,
	// killed), the time from the injection until another coordinator claimed leadership
	// (its leader gauge): the failover (-1: none did).
	NewLeaderMS int64 `json:"new_leader_ms,omitempty"`
	// NeededHeal is true when the client's first acknowledgement came only after the
	// heal although a majority with a leader was reachable during the fault.
	NeededHeal bool `json:"needed_heal,omitempty"`
	// MinorityAcks counts submissions an isolated coordinator acknowledged while cut
	// off (isolate-leader only; must be 0), MinoritySubmits how many were tried.
	MinorityAcks    int `json:"minority_acks"`
	MinoritySubmits int `json:"minority_submits"`
	// NodeDownMS is, for a worker paused longer than the node TTL, the time from the
	// pause until `node list` showed it down (-1: not seen).
	NodeDownMS int64 `json:"node_down_ms,omitempty"`
	// LiveNodesDown are the node agents the coordinators marked down during the fault
	// (from its injection until the cluster was whole) although the fault neither
	// paused them nor cut them from a majority of the coordinators.
	LiveNodesDown []string `json:"live_nodes_down,omitempty"`
	// WaitedFor is, when the cluster took more than 3 s after the heal to be whole, the
	// last condition that still failed.
	WaitedFor string `json:"waited_for,omitempty"`
	// The training probe (cfg.train): its steps per second over the fault-free time
	// before the fault and from the injection to the heal (-1: too few progress
	// reports to say), and the steps it lost (progress rewound to a checkpoint) from
	// the injection until 10 s after the cluster was whole.
	TrainBefore float64 `json:"train_steps_per_s_before"`
	TrainDuring float64 `json:"train_steps_per_s_during"`
	StepsLost   int64   `json:"steps_lost"`
	injected    time.Time
	healed      time.Time
	paused      string // the worker a pause-worker fault stopped
}

// campaign is one run's state.
type campaign struct {
	t    *testing.T
	cfg  campaignConfig
	c    *cluster
	rng  *rand.Rand
	hist history
	ctx  context.Context // the workload's: ends when the campaign stops
	// names counts job names; every submission gets a new one.
	names atomic.Int64

	mu          sync.Mutex
	acked       map[string]string // name -> acknowledged job ID
	unknown     map[string]bool   // names whose submission's outcome is unknown
	submitLat   []time.Duration   // latency of acknowledged background submissions
	slowSubmits []string          // background submissions that took > 5 s or were killed
	peerAnswers int               // list-peers answers sampled
	multiLeader []string          // list-peers answers naming more than one leader
	claims      []leaderSample    // cohort_coordinator_leader samples
	progress    map[string]*jobSeen
	stalls      map[string]string // job ID -> its longest stall
	quotaWrites int
	reads       int
	faults      []*faultRecord
	events      []event // faults in force, for the leader-change analysis
	// restartPanics are coordinator restarts that failed on raft-wal#31.
	restartPanics []string
	// began and ended bound the faults (from the cluster being up to the last heal).
	began, ended time.Time
	// trainID is the training probe's job; trainSeen its progress as polled.
	trainID          string
	trainSeen        []trainSample
	stopTrainSampler func()
}

// leaderSample is one scrape of every coordinator's leader gauge.
type leaderSample struct {
	at      time.Time
	leaders []string
}

// event is a fault's interval.
type event struct{ from, to time.Time }

// jobSeen is the last progress the reader saw of a job, and since when.
type jobSeen struct {
	state string
	epoch int
	since time.Time
}

func runCampaign(t *testing.T, cfg campaignConfig) {
	dir, err := os.MkdirTemp("", "cohort-campaign-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("COHORT_CAMPAIGN_KEEP") == "1" {
			t.Logf("campaign files kept in %s (logs of every role, harness.log, history.html on a linearizability failure)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	t.Logf("campaign seed %d: %d faults, holds %v-%v (COHORT_CAMPAIGN_SEED=%d replays the fault schedule)",
		cfg.seed, cfg.faults, cfg.holdMin, cfg.holdMax, cfg.seed)
	began := time.Now()
	c := startCluster(t, dir)
	t.Logf("cluster up in %v: coordinators %s", time.Since(began).Round(time.Millisecond), c.addrs)
	k := &campaign{t: t, cfg: cfg, c: c, rng: rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15)),
		acked: map[string]string{}, unknown: map[string]bool{}, progress: map[string]*jobSeen{}, stalls: map[string]string{}, began: time.Now()}

	ctx, stop := context.WithCancel(context.Background())
	k.ctx = ctx
	var wg sync.WaitGroup
	for i := range cfg.submitters {
		wg.Go(func() { k.submitter(ctx, i) })
	}
	wg.Go(func() { k.quotaWriter(ctx) })
	wg.Go(func() { k.reader(ctx) })
	wg.Go(func() { k.peerSampler(ctx) })
	wg.Go(func() { k.leaderSampler(ctx) })
	if cfg.train {
		k.startTrainProbe()
		// Its own context: the probe is followed past the last heal (stopTrainProbe).
		trainCtx, stopSampler := context.WithCancel(context.Background())
		var sampler sync.WaitGroup
		sampler.Go(func() { k.trainSampler(trainCtx) })
		k.stopTrainSampler = func() { stopSampler(); sampler.Wait() }
		t.Cleanup(k.stopTrainSampler)
	}
	stopWorkload := sync.OnceFunc(func() { stop(); wg.Wait() })
	t.Cleanup(stopWorkload)

	// Every kind once in a seeded order, then kinds drawn at random. The first round
	// starts with the coordinator kill: a coordinator whose log had an uncommitted
	// suffix replaced (an isolated or cut-off leader) cannot restart on raft-wal
	// v0.4.0 (hashicorp/raft-wal#31), so a kill after such a fault fails the campaign
	// (it is rebuilt, recorded and reported); the short campaign keeps clear of that
	// known bug, the long one meets it.
	order := slices.Clone(faultKinds)
	order = slices.DeleteFunc(order, func(s string) bool { return s == faultKillRestart })
	k.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	order = append([]string{faultKillRestart}, order...)
	if cfg.soak > 0 {
		t.Logf("soak: %v of workload without a fault", cfg.soak)
		soak := time.NewTimer(cfg.soak)
		<-soak.C
	}
	for i := range cfg.faults {
		kind := order[i%len(order)]
		if i >= len(order) {
			kind = faultKinds[k.rng.IntN(len(faultKinds))]
		}
		if !k.runFault(i, kind) {
			break
		}
	}
	k.ended = time.Now()
	stopWorkload()
	if t.Failed() {
		return
	}
	k.stopTrainProbe()
	k.finalChecks()
	k.report(time.Since(began))
}

// submit submits a new uniquely named job through addrs, killing the CLI after
// timeout, and records it in the history. It returns the job ID ("" unless
// acknowledged) and the CLI result.
func (k *campaign) submit(client int, addrs string, timeout time.Duration) (string, cliResult) {
	name := fmt.Sprintf("camp-%04d", k.names.Add(1))
	spec, err := k.c.jobSpec(name)
	return k.submitSpec(client, addrs, timeout, name, spec, err)
}

// submitSpec submits the job named name from the spec file spec (specErr: it could
// not be written), recording it in the history as submit does.
func (k *campaign) submitSpec(client int, addrs string, timeout time.Duration, name, spec string, specErr error) (string, cliResult) {
	if err := specErr; err != nil {
		k.t.Errorf("job spec %s: %v", name, err)
		return "", cliResult{err: err, exit: -2, call: time.Now(), ret: time.Now()}
	}
	r := k.c.cli(timeout, "job", "submit", spec, "-o", "json", "--address", addrs)
	var id string
	if r.err == nil {
		var out struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal([]byte(lastLine(r.stdout)), &out); err != nil || out.JobID == "" {
			r.err = fmt.Errorf("submit output %q: %v", r.stdout, err)
		} else {
			id = out.JobID
		}
	}
	k.hist.write(client, opInput{kind: opSubmit, key: "job/" + name}, opOutput{known: id != "", value: id}, r.call, r.ret)
	k.mu.Lock()
	if id != "" {
		k.acked[name] = id
	} else {
		k.unknown[name] = true
	}
	k.mu.Unlock()
	return id, r
}

// submitter submits jobs one after another, one per second at most.
func (k *campaign) submitter(ctx context.Context, client int) {
	for ctx.Err() == nil {
		begin := time.Now()
		id, r := k.submit(client, k.c.addrs, k.cfg.cliTimeout)
		took := r.ret.Sub(r.call)
		k.mu.Lock()
		if id != "" {
			k.submitLat = append(k.submitLat, took)
		}
		if took > 5*time.Second || r.exit == -1 {
			k.slowSubmits = append(k.slowSubmits, fmt.Sprintf("%s: %v (%v)", r.call.Format("15:04:05.000"), took.Round(time.Millisecond), r.err))
		}
		k.mu.Unlock()
		pace(ctx, begin, time.Second)
	}
}

// pace waits until every has passed since begin, or ctx ends.
func pace(ctx context.Context, begin time.Time, every time.Duration) {
	t := time.NewTimer(time.Until(begin.Add(every)))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// quotaWriter sets the CPU quota of a namespace no job uses to a new value every 2 s.
func (k *campaign) quotaWriter(ctx context.Context) {
	for i := 1; ctx.Err() == nil; i++ {
		begin := time.Now()
		cpus := 100 + i
		r := k.c.cli(k.cfg.cliTimeout, "quota", "set", "campaign-quota", "--cpu", strconv.Itoa(cpus), "--address", k.c.addrs)
		k.hist.write(10, opInput{kind: opQuotaSet, key: "quota/campaign-quota", value: strconv.Itoa(cpus * 1000)},
			opOutput{known: r.err == nil}, r.call, r.ret)
		k.mu.Lock()
		k.quotaWrites++
		k.mu.Unlock()
		pace(ctx, begin, 2*time.Second)
	}
}

// listJobs reads every job; a failed read returns an error and records nothing.
func (k *campaign) listJobs(client int, final bool) ([]listedJob, error) {
	r := k.c.cli(k.cfg.cliTimeout, "job", "list", "-o", "json", "--address", k.c.addrs)
	if r.err != nil {
		return nil, r.err
	}
	var jobs []listedJob
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &jobs); err != nil {
		return nil, fmt.Errorf("job list output: %w", err)
	}
	ids := map[string][]string{}
	for _, j := range jobs {
		ids["job/"+j.Name] = append(ids["job/"+j.Name], j.ID)
	}
	values := map[string]string{}
	for key, l := range ids {
		slices.Sort(l)
		values[key] = strings.Join(l, ",")
	}
	k.hist.read(readOp{client: client, call: r.call.UnixNano(), ret: r.ret.UnixNano(), prefix: "job/", values: values, finalVerdict: final})
	return jobs, nil
}

// listedJob is one entry of `job list -o json`.
type listedJob struct {
	ID     string `json:"job_id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Epoch  int    `json:"epoch"`
}

func (k *campaign) listQuotas(client int, final bool) error {
	r := k.c.cli(k.cfg.cliTimeout, "quota", "list", "-o", "json", "--address", k.c.addrs)
	if r.err != nil {
		return r.err
	}
	var qs []struct {
		Namespace string `json:"namespace"`
		CPUMillis int64  `json:"cpu_millis"`
	}
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &qs); err != nil {
		return fmt.Errorf("quota list output: %w", err)
	}
	values := map[string]string{}
	for _, q := range qs {
		values["quota/"+q.Namespace] = strconv.FormatInt(q.CPUMillis, 10)
	}
	k.hist.read(readOp{client: client, call: r.call.UnixNano(), ret: r.ret.UnixNano(), prefix: "quota/", values: values, finalVerdict: final})
	return nil
}

// reader lists jobs and quotas every second, and watches the jobs' progress.
func (k *campaign) reader(ctx context.Context) {
	for ctx.Err() == nil {
		begin := time.Now()
		if jobs, err := k.listJobs(11, false); err == nil {
			k.watchProgress(jobs, time.Now())
		}
		_ = k.listQuotas(12, false)
		k.mu.Lock()
		k.reads++
		k.mu.Unlock()
		pace(ctx, begin, time.Second)
	}
}

// watchProgress records a stall: a job RUNNING with the same epoch for more than
// twice the node TTL (the reader's list answers are a second apart, so a job whose
// whole run fits in that time is never seen stalled).
func (k *campaign) watchProgress(jobs []listedJob, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, j := range jobs {
		s, ok := k.progress[j.ID]
		if !ok || s.state != j.Status || s.epoch != j.Epoch {
			k.progress[j.ID] = &jobSeen{state: j.Status, epoch: j.Epoch, since: now}
			continue
		}
		if j.Status == "running" && now.Sub(s.since) > 2*nodeTTL {
			k.stalls[j.ID] = fmt.Sprintf("%s RUNNING at epoch %d without progress from %s to %s (%v)", j.ID, j.Epoch,
				s.since.Format("15:04:05"), now.Format("15:04:05"), now.Sub(s.since).Round(time.Second))
		}
	}
}

// peerSampler asks every coordinator, through its own address only, for the Raft
// peers every 2 s; an answer naming two leaders breaks "one leader per term".
func (k *campaign) peerSampler(ctx context.Context) {
	for ctx.Err() == nil {
		begin := time.Now()
		var wg sync.WaitGroup
		for _, co := range k.c.coords {
			wg.Go(func() {
				r := k.c.cli(5*time.Second, "operator", "raft", "list-peers", "-o", "json", "--address", co.grpc)
				if r.err != nil {
					return
				}
				var ps []peer
				if json.Unmarshal([]byte(lastLine(r.stdout)), &ps) != nil {
					return
				}
				var leaders []string
				for _, p := range ps {
					if p.Leader {
						leaders = append(leaders, p.ID)
					}
				}
				k.mu.Lock()
				k.peerAnswers++
				if len(leaders) > 1 {
					k.multiLeader = append(k.multiLeader, fmt.Sprintf("%s via %s: leaders %v", r.ret.Format("15:04:05.000"), co.id, leaders))
				}
				k.mu.Unlock()
			})
		}
		wg.Wait()
		pace(ctx, begin, 2*time.Second)
	}
}

// leaderSampler scrapes the coordinators' leader gauges every 250 ms.
func (k *campaign) leaderSampler(ctx context.Context) {
	for ctx.Err() == nil {
		begin := time.Now()
		leaders, _ := k.c.leaderClaims()
		k.mu.Lock()
		k.claims = append(k.claims, leaderSample{at: begin, leaders: leaders})
		k.mu.Unlock()
		pace(ctx, begin, 250*time.Millisecond)
	}
}

// leader waits until exactly one coordinator claims leadership and returns it.
func (k *campaign) leader() *coordinator {
	var id string
	k.c.waitFor("one leader", k.cfg.recoverBy, func() error {
		leaders, silent := k.c.leaderClaims()
		if len(leaders) != 1 || len(silent) > 0 {
			return fmt.Errorf("leaders %v, silent %v", leaders, silent)
		}
		id = leaders[0]
		return nil
	})
	return k.c.coordinator(id)
}

// runFault injects one fault of kind, holds it, heals it and waits for the cluster to
// be whole again. It returns false when the campaign cannot go on.
func (k *campaign) runFault(i int, kind string) bool {
	t, c := k.t, k.c
	quiet := time.NewTimer(k.cfg.quiet) // the workload runs on, fault-free
	<-quiet.C
	hold := k.cfg.holdMin + time.Duration(k.rng.Int64N(int64(k.cfg.holdMax-k.cfg.holdMin)+1))
	leader := k.leader()
	var followers []*coordinator
	for _, co := range c.coords {
		if co != leader {
			followers = append(followers, co)
		}
	}
	rec := &faultRecord{Kind: kind, HoldMS: hold.Milliseconds(), NodeDownMS: -1}
	var heal func() error
	var oldLeader string // set when the fault takes the leader away
	var minority *coordinator
	var pausedWorker *agent
	switch kind {
	case faultIsolateLeader:
		var others []*netns.Host
		for _, co := range followers {
			others = append(others, co.host)
		}
		for _, a := range c.agents {
			others = append(others, a.host)
		}
		f, err := c.net.Partition([]*netns.Host{leader.host}, others)
		if err != nil {
			t.Fatal(err)
		}
		rec.Desc, heal, minority, oldLeader = f.String()+" (leader "+leader.id+")", f.Heal, leader, leader.id
	case faultCutFollower:
		j := k.rng.IntN(len(followers))
		fo, other := followers[j], followers[1-j]
		f, err := c.net.Partition([]*netns.Host{fo.host}, []*netns.Host{leader.host, other.host})
		if err != nil {
			t.Fatal(err)
		}
		rec.Desc, heal = f.String(), f.Heal
	case faultOneWay:
		from, to := []*netns.Host{leader.host}, []*netns.Host{followers[0].host, followers[1].host}
		if k.rng.IntN(2) == 1 {
			from, to = to, from
		}
		f, err := c.net.PartitionOneWay(from, to)
		if err != nil {
			t.Fatal(err)
		}
		rec.Desc, heal, oldLeader = f.String()+" (leader "+leader.id+")", f.Heal, leader.id
	case faultLossLeader:
		f, err := c.net.Loss(leader.host, 0.2)
		if err != nil {
			t.Fatal(err)
		}
		rec.Desc, heal = f.String(), f.Heal
	case faultKillRestart:
		victim := leader
		if k.rng.IntN(2) == 1 {
			victim = followers[k.rng.IntN(len(followers))]
		}
		victim.proc.Kill()
		role := "follower"
		if victim == leader {
			role, oldLeader = "leader", leader.id
		}
		rec.Desc = fmt.Sprintf("SIGKILL coordinator %s (%s), restart after the hold", victim.id, role)
		heal = func() error { c.startCoordinator(victim); return nil }
	case faultPauseWorker:
		w := c.agents[2+k.rng.IntN(2)]
		if err := w.proc.Pause(); err != nil {
			t.Fatal(err)
		}
		rec.Desc, heal, pausedWorker, rec.paused = "SIGSTOP worker "+w.id+", SIGCONT after the hold", w.proc.Resume, w, w.id
	}
	rec.injected = time.Now()
	c.netLog.printf("fault %d: %s: %s for %v", i, kind, rec.Desc, hold)

	// A client starts submitting at the injection: the time to its first
	// acknowledgement is the fault's time to recover.
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for {
			id, r := k.submit(20, c.addrs, k.cfg.cliTimeout)
			rec.ProbeAttempts++
			if id != "" {
				rec.RecoverMS = r.ret.Sub(rec.injected).Milliseconds()
				return
			}
			if r.exit == -1 {
				rec.ProbeKilled++
			} else {
				rec.ProbeFailed++
			}
			if time.Since(rec.injected) > hold+k.cfg.recoverBy || k.ctx.Err() != nil {
				rec.RecoverMS = -1
				return
			}
			pace(k.ctx, r.call, 100*time.Millisecond) // a user retrying at once, not a busy loop
		}
	}()
	// While the leader is isolated, a client that reaches only it must get no
	// acknowledgement: the submissions end before the heal.
	minorityDone := make(chan struct{})
	go func() {
		defer close(minorityDone)
		if minority == nil {
			return
		}
		until := rec.injected.Add(hold - 500*time.Millisecond)
		for time.Until(until) > 200*time.Millisecond && k.ctx.Err() == nil {
			id, r := k.submit(21, minority.grpc, time.Until(until))
			k.mu.Lock()
			rec.MinoritySubmits++
			if id != "" {
				rec.MinorityAcks++
			}
			k.mu.Unlock()
			pace(k.ctx, r.call, 200*time.Millisecond)
		}
	}()
	// A worker paused past the node TTL must be marked down within TTL + 2 s.
	downSeen := make(chan struct{})
	go func() {
		defer close(downSeen)
		if pausedWorker == nil || hold < nodeTTL+2*time.Second {
			return
		}
		_ = poll(hold, func() error {
			if k.nodeState(pausedWorker.id) == "NODE_STATUS_DOWN" {
				rec.NodeDownMS = time.Since(rec.injected).Milliseconds()
				return nil
			}
			return fmt.Errorf("up")
		})
	}()

	holdTimer := time.NewTimer(hold)
	<-holdTimer.C
	<-minorityDone
	if err := heal(); err != nil {
		t.Fatalf("heal %s: %v", rec.Desc, err)
	}
	rec.healed = time.Now()
	c.netLog.printf("fault %d: healed", i)
	<-downSeen
	if err := k.waitWhole(rec); err != nil {
		t.Errorf("fault %d (%s: %s): the cluster was not whole %v after the heal: %v", i, kind, rec.Desc, k.cfg.recoverBy, err)
		return false
	}
	<-probeDone
	if rec.RecoverMS > 0 && rec.injected.Add(time.Duration(rec.RecoverMS)*time.Millisecond).After(rec.healed) &&
		kind != faultKillRestart && kind != faultPauseWorker {
		rec.NeededHeal = true // a majority (2 coordinators) kept a leader throughout these faults
	}
	if oldLeader != "" {
		rec.NewLeaderMS = k.failover(oldLeader, rec.injected)
	}
	k.mu.Lock()
	k.faults = append(k.faults, rec)
	k.events = append(k.events, event{rec.injected, rec.healed.Add(time.Duration(rec.AfterHealMS) * time.Millisecond)})
	k.mu.Unlock()
	note := ""
	if rec.NewLeaderMS != 0 {
		note += fmt.Sprintf("  new leader after %.2fs", float64(rec.NewLeaderMS)/1000)
	}
	if rec.NeededHeal {
		note += "  (the client got through only after the heal)"
	}
	if rec.WaitedFor != "" {
		note += "  (whole last: " + firstLine(rec.WaitedFor) + ")"
	}
	if minority != nil {
		note += fmt.Sprintf("  isolated %s acked %d of %d", minority.id, rec.MinorityAcks, rec.MinoritySubmits)
	}
	if pausedWorker != nil && hold >= nodeTTL+2*time.Second {
		if rec.NodeDownMS < 0 {
			note += "  never marked down"
		} else {
			note += fmt.Sprintf("  marked down after %.1fs", float64(rec.NodeDownMS)/1000)
		}
	}
	t.Logf("fault %2d %-19s hold %4.1fs  recover %6.2fs (%d tries, %d killed at %v)  whole after heal %5.2fs  %s%s",
		i, kind, hold.Seconds(), float64(rec.RecoverMS)/1000, rec.ProbeAttempts, rec.ProbeKilled, k.cfg.cliTimeout,
		float64(rec.AfterHealMS)/1000, rec.Desc, note)
	return true
}

// failover is the time from injected until a leader gauge sample showed a
// coordinator other than old leading (-1: none did).
func (k *campaign) failover(old string, injected time.Time) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.claims {
		if s.at.Before(injected) {
			continue
		}
		for _, l := range s.leaders {
			if l != old {
				return s.at.Sub(injected).Milliseconds()
			}
		}
	}
	return -1
}

// nodeState is a node's status in `node list -o json` ("" when unknown).
func (k *campaign) nodeState(id string) string {
	r := k.c.cli(5*time.Second, "node", "list", "-o", "json", "--address", k.c.addrs)
	if r.err != nil {
		return ""
	}
	var out struct {
		Nodes []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"nodes"`
	}
	if json.Unmarshal([]byte(r.stdout), &out) != nil {
		return ""
	}
	for _, n := range out.Nodes {
		if n.ID == id {
			return n.Status
		}
	}
	return ""
}

// waitWhole waits after a heal until one coordinator claims leadership, every
// coordinator answers list-peers through its own address with 3 voters and a leader,
// every node agent is ready and READY in the node list, and a new submission is
// acknowledged.
func (k *campaign) waitWhole(rec *faultRecord) error {
	c := k.c
	var last error
	err := poll(k.cfg.recoverBy, func() (err error) {
		defer func() {
			if err != nil {
				last = err
			}
		}()
		for _, co := range c.coords {
			exited, werr := co.proc.Exited()
			if !exited {
				continue
			}
			tail := logTail(co.log, 40)
			if !strings.Contains(tail, "sealed segment has no index block") {
				return fmt.Errorf("coordinator %s exited (%v):\n%s", co.id, werr, tail)
			}
			k.mu.Lock()
			k.restartPanics = append(k.restartPanics, fmt.Sprintf("%s after %s: %s", co.id, rec.Desc, lastLine(grepLine(tail, "panic:"))))
			k.mu.Unlock()
			c.netLog.printf("coordinator %s cannot restart (raft-wal#31): rebuilding it", co.id)
			if err := c.rebuildCoordinator(co); err != nil {
				return fmt.Errorf("rebuild coordinator %s: %v", co.id, err)
			}
		}
		if leaders, silent := c.leaderClaims(); len(leaders) != 1 || len(silent) > 0 {
			return fmt.Errorf("leader gauges: leaders %v, silent %v", leaders, silent)
		}
		for _, co := range c.coords {
			if _, err := c.peersVia(co.grpc, 5*time.Second); err != nil {
				return fmt.Errorf("list-peers via %s: %v", co.id, err)
			}
		}
		for _, a := range c.agents {
			if err := c.get(a.ready); err != nil {
				return err
			}
			if s := k.nodeState(a.id); s != "NODE_STATUS_READY" {
				return fmt.Errorf("node %s is %q", a.id, s)
			}
		}
		if id, r := k.submit(22, c.addrs, k.cfg.cliTimeout); id == "" {
			return fmt.Errorf("submit: %v", r.err)
		}
		return nil
	})
	rec.AfterHealMS = time.Since(rec.healed).Milliseconds()
	if last != nil && rec.AfterHealMS > 3000 {
		rec.WaitedFor = last.Error()
	}
	return err
}

// finalChecks waits for the jobs to end and checks what must hold.
func (k *campaign) finalChecks() {
	t, c := k.t, k.c
	// Jobs end: the unfinished ones must keep ending (or progressing) at least every
	// drainBy until none is left.
	var jobs []listedJob
	lastChange, lastSig := time.Now(), ""
	for {
		var err error
		jobs, err = k.listJobs(30, false)
		if err != nil {
			if time.Since(lastChange) > k.cfg.drainBy {
				t.Fatalf("job list failed for %v after the campaign: %v", k.cfg.drainBy, err)
			}
			pace(context.Background(), time.Now(), time.Second)
			continue
		}
		k.watchProgress(jobs, time.Now())
		var open []string
		for _, j := range jobs {
			if !terminal(j.Status) {
				open = append(open, fmt.Sprintf("%s %s epoch %d", j.ID, j.Status, j.Epoch))
			}
		}
		if len(open) == 0 {
			break
		}
		if sig := strings.Join(open, ";"); sig != lastSig {
			lastSig, lastChange = sig, time.Now()
		} else if time.Since(lastChange) > k.cfg.drainBy {
			t.Errorf("%d jobs made no progress for %v after the campaign: %v", len(open), k.cfg.drainBy, open)
			break
		}
		pace(context.Background(), time.Now(), time.Second)
	}
	jobs, err := k.listJobs(31, true)
	if err != nil {
		t.Fatalf("final job list: %v", err)
	}
	if err := k.listQuotas(31, true); err != nil {
		t.Fatalf("final quota list: %v", err)
	}

	// No acknowledged submission lost or duplicated; unknown ones at most once.
	byName := map[string][]listedJob{}
	for _, j := range jobs {
		byName[j.Name] = append(byName[j.Name], j)
	}
	k.mu.Lock()
	acked, unknown := maps(k.acked), maps(k.unknown)
	k.mu.Unlock()
	lost, dup := 0, 0
	for name, id := range acked {
		got := byName[name]
		if len(got) != 1 || got[0].ID != id {
			lost++
			t.Errorf("acknowledged submission %s (job %s) is listed as %+v", name, id, got)
		}
	}
	unknownPresent := 0
	for name, l := range byName {
		if len(l) > 1 {
			dup++
			t.Errorf("job name %s listed %d times: %+v", name, len(l), l)
		}
		if unknown[name] {
			unknownPresent++
		} else if _, ok := acked[name]; !ok {
			t.Errorf("job %s (%s) was never submitted by the campaign", l[0].ID, name)
		}
	}

	// The history is linearizable.
	ops := k.hist.operations()
	res, info := porcupine.CheckOperationsVerbose(registersModel, ops, 2*time.Minute)
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(c.dir, "history.html")
		if err := porcupine.VisualizePath(registersModel, info, path); err != nil {
			t.Logf("visualize: %v", err)
		}
		t.Errorf("the client history (%d operations) is not linearizable; see %s", len(ops), path)
	case porcupine.Unknown:
		t.Errorf("porcupine timed out on %d operations", len(ops))
	}

	// Every succeeded job's latest checkpoint is listed and verifies.
	states := map[string]int{}
	var succeeded []string
	for _, j := range jobs {
		states[j.Status]++
		if j.Status == "succeeded" {
			succeeded = append(succeeded, j.ID)
		}
	}
	verified := k.verifyCheckpoints(succeeded)

	compared, err := c.checkLogsAgree()
	if err != nil {
		t.Errorf("the coordinators' Raft logs disagree: %v", err)
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range k.faults {
		if f.MinorityAcks > 0 {
			t.Errorf("fault %s: the isolated coordinator acknowledged %d submissions", f.Desc, f.MinorityAcks)
		}
	}
	for _, f := range k.faults {
		// A worker paused well past the TTL must have been marked down within TTL + 2 s
		// (of the pause, which is at most its last heartbeat).
		if f.Kind == faultPauseWorker && time.Duration(f.HoldMS)*time.Millisecond >= nodeTTL+4*time.Second &&
			(f.NodeDownMS < 0 || time.Duration(f.NodeDownMS)*time.Millisecond > nodeTTL+2*time.Second) {
			t.Errorf("fault %s (hold %d ms): the paused worker was marked down after %d ms (-1: never), want within the TTL + 2 s",
				f.Desc, f.HoldMS, f.NodeDownMS)
		}
	}
	for _, p := range k.restartPanics {
		t.Errorf("a restarted coordinator could not read its own Raft log (hashicorp/raft-wal#31, fixed upstream by raft-wal PR #33; rebuilt from the leader): %s", p)
	}
	for _, m := range k.multiLeader {
		t.Errorf("list-peers answer with more than one leader: %s", m)
	}
	for _, s := range k.stalls { // map order: one error per stalled job
		t.Errorf("job without progress for more than 2x the node TTL: %s", s)
	}
	t.Logf("history: %d submissions acknowledged, %d unknown (%d of them exist), %d lost, %d duplicated; %d quota writes; %d reads; %d porcupine operations: %v",
		len(acked), len(unknown), unknownPresent, lost, dup, k.quotaWrites, k.reads, len(ops), res)
	t.Logf("jobs: %v; %d succeeded jobs' checkpoints verified; the 3 Raft logs agree on %d entries", states, verified, compared)
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// grepLine returns the lines of s that contain sub.
func grepLine(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func terminal(status string) bool {
	return status == "succeeded" || status == "failed" || status == "cancelled"
}

func maps[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// verifyCheckpoints checks, for each job, that `checkpoint list` shows its latest
// checkpoint without error and that the manifest's objects have their recorded sizes
// and checksums. It returns how many verified.
func (k *campaign) verifyCheckpoints(ids []string) int {
	var verified atomic.Int64
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r := k.c.cli(30*time.Second, "checkpoint", "list", id, "-o", "json", "--address", k.c.addrs)
			if r.err != nil {
				k.t.Errorf("checkpoint list %s: %v", id, r.err)
				return
			}
			var rows []checkpointRow
			if err := json.Unmarshal([]byte(lastLine(r.stdout)), &rows); err != nil {
				k.t.Errorf("checkpoint list %s output %q: %v", id, r.stdout, err)
				return
			}
			i := slices.IndexFunc(rows, func(r checkpointRow) bool { return r.Latest })
			if i < 0 || rows[i].Error != "" {
				k.t.Errorf("succeeded job %s has no readable latest checkpoint: %+v", id, rows)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			store, _, err := storage.OpenManifestStore(ctx, rows[i].URI, storage.DefaultS3Config())
			if err == nil {
				_, err = storage.OpenCheckpoint(ctx, store, rows[i].URI)
			}
			if err != nil {
				k.t.Errorf("succeeded job %s: latest checkpoint %s does not verify: %v", id, rows[i].URI, err)
				return
			}
			verified.Add(1)
		})
	}
	wg.Wait()
	return int(verified.Load())
}

// checkpointRow is one entry of `checkpoint list -o json`.
type checkpointRow struct {
	URI    string `json:"uri"`
	Latest bool   `json:"latest"`
	Error  string `json:"error"`
}

// campaignReport is the JSON summary (COHORT_CAMPAIGN_REPORT).
type campaignReport struct {
	Seed       uint64                `json:"seed"`
	WallS      float64               `json:"wall_s"`
	Faults     []*faultRecord        `json:"faults"`
	ByKind     map[string]kindFigure `json:"by_kind"`
	SubmitP50  float64               `json:"submit_p50_ms"`
	SubmitP99  float64               `json:"submit_p99_ms"`
	Slow       []string              `json:"slow_submits"`
	Changes    int                   `json:"leader_changes"`
	Unforced   int                   `json:"leader_changes_without_fault"`
	DualClaims int                   `json:"samples_with_two_leader_claims"`
	// StepDowns counts "failed to contact quorum of nodes, stepping down" in the
	// coordinators' logs; StepDownsNoFault those outside every fault's interval (from
	// the injection until the cluster was whole again, plus 2 s), over FaultFreeS
	// seconds of campaign without a fault.
	StepDowns        int      `json:"step_downs"`
	StepDownsNoFault int      `json:"step_downs_without_fault"`
	FaultFreeS       float64  `json:"fault_free_s"`
	RestartPanics    []string `json:"restart_panics,omitempty"`
}

// liveNodesDown fills each fault's LiveNodesDown from the coordinators' logs
// ("node marked down: heartbeat TTL expired ... node=ID"). Call with k.mu held.
func (k *campaign) liveNodesDown() {
	for _, co := range k.c.coords {
		b, err := os.ReadFile(co.log)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "node marked down") {
				continue
			}
			ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				continue
			}
			_, node, _ := strings.Cut(line, " node=")
			node, _, _ = strings.Cut(node, " ")
			for _, f := range k.faults {
				end := f.healed.Add(time.Duration(f.AfterHealMS) * time.Millisecond)
				if at.Before(f.injected) || at.After(end) || node == f.paused {
					continue
				}
				if !slices.Contains(f.LiveNodesDown, node) {
					f.LiveNodesDown = append(f.LiveNodesDown, node)
				}
			}
		}
	}
}

// stepDowns counts the leader step-downs in the coordinators' logs, those outside the
// faults' intervals, and the campaign's fault-free seconds. Call with k.mu held.
func (k *campaign) stepDowns() (all, noFault int, faultFree float64) {
	inFault := func(t time.Time) bool {
		for _, e := range k.events {
			if !t.Before(e.from) && !t.After(e.to.Add(2*time.Second)) {
				return true
			}
		}
		return false
	}
	for _, co := range k.c.coords {
		b, err := os.ReadFile(co.log)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "failed to contact quorum of nodes, stepping down") {
				continue
			}
			ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || at.Before(k.began) {
				continue
			}
			all++
			if !inFault(at) {
				noFault++
			}
		}
	}
	total := k.ended.Sub(k.began).Seconds()
	for _, e := range k.events {
		total -= e.to.Add(2 * time.Second).Sub(e.from).Seconds()
	}
	return all, noFault, max(total, 0)
}

// kindFigure is the time to recover of one fault kind.
type kindFigure struct {
	N           int     `json:"n"`
	RecoverP50  float64 `json:"recover_p50_s"`
	RecoverP99  float64 `json:"recover_p99_s"`
	RecoverMax  float64 `json:"recover_max_s"`
	WholeP50    float64 `json:"whole_after_heal_p50_s"`
	WholeP99    float64 `json:"whole_after_heal_p99_s"`
	FailoverN   int     `json:"failover_n"`
	FailoverP50 float64 `json:"failover_p50_s"`
	FailoverP99 float64 `json:"failover_p99_s"`
	NeededHeal  int     `json:"needed_heal"`
	// LiveNodesDown counts the faults during which live, reachable node agents were
	// marked down.
	LiveNodesDown int `json:"faults_with_live_nodes_down"`
	ProbeKilled   int `json:"probe_killed"`
	// The training probe's figures: steps lost (sum and worst fault), and the median
	// over faults of the throughput during the fault against before it (-1: none).
	StepsLost      int64   `json:"steps_lost"`
	StepsLostMax   int64   `json:"steps_lost_max"`
	TrainRatioP50  float64 `json:"train_during_vs_before_p50"`
	TrainRatioMin  float64 `json:"train_during_vs_before_min"`
	TrainMeasuredN int     `json:"train_measured_n"`
}

// quantile is the q-quantile (nearest rank) of sorted values.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func (k *campaign) report(wall time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	rep := campaignReport{Seed: k.cfg.seed, WallS: wall.Seconds(), Faults: k.faults, ByKind: map[string]kindFigure{}, Slow: k.slowSubmits,
		RestartPanics: k.restartPanics}
	k.liveNodesDown()
	k.trainFigures()
	rec, whole, fail := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	killed, needed, liveDown := map[string]int{}, map[string]int{}, map[string]int{}
	for _, f := range k.faults {
		if len(f.LiveNodesDown) > 0 {
			liveDown[f.Kind]++
			k.t.Logf("live nodes marked down during fault %s (%s, hold %.1fs): %v", f.Kind, f.Desc, float64(f.HoldMS)/1000, f.LiveNodesDown)
		}
		if f.NewLeaderMS > 0 {
			fail[f.Kind] = append(fail[f.Kind], float64(f.NewLeaderMS)/1000)
		}
		if f.NeededHeal {
			needed[f.Kind]++
		}
		if f.RecoverMS >= 0 {
			rec[f.Kind] = append(rec[f.Kind], float64(f.RecoverMS)/1000)
		}
		whole[f.Kind] = append(whole[f.Kind], float64(f.AfterHealMS)/1000)
		killed[f.Kind] += f.ProbeKilled
	}
	kinds := make([]string, 0, len(whole))
	for kind := range whole {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		r, w, fo := rec[kind], whole[kind], fail[kind]
		slices.Sort(r)
		slices.Sort(w)
		slices.Sort(fo)
		fig := kindFigure{N: len(w), RecoverP50: quantile(r, 0.5), RecoverP99: quantile(r, 0.99), WholeP50: quantile(w, 0.5),
			WholeP99: quantile(w, 0.99), ProbeKilled: killed[kind], FailoverN: len(fo), FailoverP50: quantile(fo, 0.5),
			FailoverP99: quantile(fo, 0.99), NeededHeal: needed[kind], LiveNodesDown: liveDown[kind]}
		if len(r) > 0 {
			fig.RecoverMax = r[len(r)-1]
		}
		var ratios []float64
		for _, f := range k.faults {
			if f.Kind != kind {
				continue
			}
			fig.StepsLost += f.StepsLost
			fig.StepsLostMax = max(fig.StepsLostMax, f.StepsLost)
			if f.TrainBefore > 0 && f.TrainDuring >= 0 {
				ratios = append(ratios, f.TrainDuring/f.TrainBefore)
			}
		}
		slices.Sort(ratios)
		fig.TrainMeasuredN, fig.TrainRatioP50, fig.TrainRatioMin = len(ratios), -1, -1
		if len(ratios) > 0 {
			fig.TrainRatioP50, fig.TrainRatioMin = quantile(ratios, 0.5), ratios[0]
		}
		rep.ByKind[kind] = fig
	}
	for _, kind := range kinds {
		fig := rep.ByKind[kind]
		if k.cfg.train {
			k.t.Logf("%-19s training probe: steps lost %d (worst fault %d); steps/s during the fault against before it: p50 %.2f, min %.2f (%d faults measured)",
				kind, fig.StepsLost, fig.StepsLostMax, fig.TrainRatioP50, fig.TrainRatioMin, fig.TrainMeasuredN)
		}
		k.t.Logf("%-19s n=%3d  recover p50 %6.2fs p99 %6.2fs max %6.2fs  whole after heal p50 %5.2fs p99 %5.2fs  new leader (n=%d) p50 %4.2fs p99 %4.2fs  needed the heal %d  live nodes marked down in %d  probe CLIs killed at %v: %d",
			kind, fig.N, fig.RecoverP50, fig.RecoverP99, fig.RecoverMax, fig.WholeP50, fig.WholeP99, fig.FailoverN, fig.FailoverP50, fig.FailoverP99,
			fig.NeededHeal, fig.LiveNodesDown, k.cfg.cliTimeout, fig.ProbeKilled)
	}
	lat := make([]float64, len(k.submitLat))
	for i, d := range k.submitLat {
		lat[i] = float64(d.Milliseconds())
	}
	slices.Sort(lat)
	rep.SubmitP50, rep.SubmitP99 = quantile(lat, 0.5), quantile(lat, 0.99)

	// Leadership changes seen by the gauges, and those outside any fault's interval
	// (step-downs on a loaded host with no fault at all).
	prev := ""
	for _, s := range k.claims {
		if len(s.leaders) > 1 {
			rep.DualClaims++
		}
		if len(s.leaders) != 1 {
			continue
		}
		if prev != "" && s.leaders[0] != prev {
			rep.Changes++
			inFault := false
			for _, e := range k.events {
				if !s.at.Before(e.from) && !s.at.After(e.to.Add(2*time.Second)) {
					inFault = true
				}
			}
			if !inFault {
				rep.Unforced++
			}
		}
		prev = s.leaders[0]
	}
	rep.StepDowns, rep.StepDownsNoFault, rep.FaultFreeS = k.stepDowns()
	k.t.Logf("leader step-downs (\"failed to contact quorum\" in the coordinators' logs): %d, %d of them outside any fault (%.0f s without a fault: %.0f per hour)",
		rep.StepDowns, rep.StepDownsNoFault, rep.FaultFreeS, float64(rep.StepDownsNoFault)/max(rep.FaultFreeS, 1)*3600)
	k.t.Logf("background submissions: p50 %.0f ms, p99 %.0f ms, %d slower than 5 s or killed; leader changes %d (%d outside faults); %d samples with two leader claims; list-peers answers %d",
		rep.SubmitP50, rep.SubmitP99, len(k.slowSubmits), rep.Changes, rep.Unforced, rep.DualClaims, k.peerAnswers)
	for _, s := range k.slowSubmits {
		k.t.Logf("slow submission: %s", s)
	}
	k.t.Logf("campaign wall time %v", wall.Round(time.Second))
	if path := os.Getenv("COHORT_CAMPAIGN_REPORT"); path != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			k.t.Errorf("report: %v", err)
		}
	}
}
