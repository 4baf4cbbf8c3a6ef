package server_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/clustertest"
	"github.com/cohort-dev/cohort/coordinator/search"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// haSearchTrials, haSearchEpochs: an ASHA search of 6 trials of 4 epochs with
// minEpochs 1 and reductionFactor 2 (rungs at epochs 1 and 2), 2 trials at a time.
const (
	haSearchTrials = 6
	haSearchEpochs = 4
)

// haMetric is the val_auc the scripted chief of trial i reports after epoch e.
func haMetric(i, e int) float64 {
	rank := []int{2, 5, 0, 3, 1, 4}[i%6]
	return 0.5 + 0.04*float64(rank) + 0.01*float64(e)
}

func haSearch() *cohortv1.Search {
	s := &cohortv1.Search{
		Id: "hs-1", Namespace: "default", Name: "hs", IdempotencyKey: "hs-key",
		Algorithm: "asha", Metric: "val_auc", Maximize: true, MinEpochs: 1, MaxEpochs: haSearchEpochs, ReductionFactor: 2,
		ParallelTrials: 2, Seed: 7,
	}
	for i := range haSearchTrials {
		name := fmt.Sprintf("hs-t%d", i)
		job, err := clustertest.ParseSpec([]byte("name: " + name))
		if err != nil {
			panic(err)
		}
		job.Id, job.SpecYaml, job.IdempotencyKey = "hs-1-t"+fmt.Sprint(i), []byte("name: "+name), "hs-key/trial/"+fmt.Sprint(i)
		s.Trials = append(s.Trials, &cohortv1.SearchTrial{Index: int32(i), Parameters: map[string]string{"lr": fmt.Sprint(0.001 * float64(i+1))}, Job: job})
	}
	return s
}

// TestSearchSurvivesLeaderFailoverAndFullRestart runs an ASHA search on a 3-voter
// cluster, with the test as the trials' chief workers (each reports its epochs through
// the AgentService, as a node agent does). It kills the leader once three rung
// decisions are recorded and, later, stops and restarts every voter. The search must
// end with every trial started exactly once, every epoch a trial's job accepted
// recorded with its value, and rung decisions equal to a replay of ASHA over the
// recorded results in Raft order (so no decision was lost, repeated or taken twice).
func TestSearchSurvivesLeaderFailoverAndFullRestart(t *testing.T) {
	c := clustertest.TestCluster(t, 3, clustertest.Options{Mutate: func(cfg *server.Config) {
		cfg.HeartbeatTTL = time.Hour // the test registers the node once and sends no heartbeats
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader := c.WaitForLeader(t)
	if _, err := leader.Agent().RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: &cohortv1.Node{
		Name: "n1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER},
		DataAddress: "127.0.0.1:1", Capacity: &cohortv1.Resources{CpuMillis: 8000, MemoryBytes: 8 << 30},
	}}); err != nil {
		t.Fatalf("register node: %v", err)
	}
	if _, err := leader.Server().Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_Search{Search: &cohortv1.SearchCommand{
		Op: &cohortv1.SearchCommand_Submit{Submit: haSearch()},
	}}}); err != nil {
		t.Fatalf("submit search: %v", err)
	}

	acked := map[string]int{} // job ID -> epochs whose report the cluster acknowledged
	rungs := search.Rungs(1, haSearchEpochs, 2)
	killedLeader, restarted := false, false
	var final *cohortv1.Search
	for final == nil {
		if ctx.Err() != nil {
			t.Fatalf("search did not finish: acked %v", acked)
		}
		leader = c.WaitForLeader(t)
		store := leader.Server().State()
		ws := memdb.NewWatchSet()
		sr, err := store.SearchByID(ws, "hs-1")
		if err != nil || sr == nil {
			t.Fatalf("search: %v %v", sr, err)
		}
		if sr.State != cohortv1.SearchState_SEARCH_STATE_RUNNING {
			final = sr
			break
		}
		decisions, running := 0, 0
		for _, tr := range sr.Trials {
			decisions += len(tr.Decisions)
		}
		switch {
		case !killedLeader && decisions >= 3:
			t.Logf("killing leader %s after %d decisions", leader.ID, decisions)
			leader.Stop()
			killedLeader = true
			continue
		case killedLeader && !restarted && decisions >= 6:
			t.Logf("stopping every voter after %d decisions", decisions)
			for _, n := range c.Nodes {
				n.Stop()
			}
			for _, n := range c.Nodes {
				if err := n.Restart(); err != nil {
					t.Fatalf("restart %s: %v", n.ID, err)
				}
			}
			restarted = true
			continue
		}
		// One epoch of every placed trial, as its chief would report it.
		var reports []*cohortv1.TaskReport
		jobs, err := store.Jobs(ws)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.SearchId != "hs-1" || j.State != cohortv1.JobState_JOB_STATE_RUNNING {
				continue
			}
			running++
			allocs, err := store.AllocsByJob(nil, j.Id)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range allocs {
				if a.Kind != cohortv1.TaskKind_TASK_KIND_WORKER || a.Index != 0 || state.TaskTerminal(a.State) {
					continue
				}
				tr := sr.Trials[j.SearchTrial]
				if last := acked[j.Id]; last > 0 && search.RungOf(rungs, last) >= 0 && !hasDecision(tr, search.RungOf(rungs, last)) {
					continue // the next epoch takes longer than the leader's decision at this rung
				}
				e := acked[j.Id] + 1
				reports = append(reports, &cohortv1.TaskReport{AllocationId: a.Id, JobId: j.Id, State: cohortv1.TaskState_TASK_STATE_RUNNING,
					Progress: &cohortv1.JobProgress{Epoch: int32(e), TotalEpochs: haSearchEpochs},
					Metrics:  map[string]float64{"val_auc": haMetric(int(j.SearchTrial), e), "val_loss": 1 - haMetric(int(j.SearchTrial), e)}})
				if e == haSearchEpochs {
					reports = append(reports, &cohortv1.TaskReport{AllocationId: a.Id, JobId: j.Id, State: cohortv1.TaskState_TASK_STATE_SUCCEEDED,
						Metrics: map[string]float64{"val_auc": haMetric(int(j.SearchTrial), e)}, ExportedFrom: &cohortv1.ExportedFrom{Step: int64(e), Epoch: int32(e)}})
				}
			}
		}
		if len(reports) > 0 {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := leader.Agent().ReportTasks(rctx, &cohortv1.ReportTasksRequest{Reports: reports})
			rcancel()
			if err == nil {
				for _, r := range reports {
					if r.Progress != nil {
						acked[r.JobId] = int(r.Progress.Epoch)
					}
				}
			}
			continue
		}
		// Nothing to report: wait for the leader to decide, start or place something.
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		_ = ws.WatchCtx(wctx)
		wcancel()
	}
	if !killedLeader || !restarted {
		t.Fatalf("search ended before the faults: killed leader %v, restarted %v", killedLeader, restarted)
	}
	if final.State != cohortv1.SearchState_SEARCH_STATE_SUCCEEDED {
		t.Fatalf("search %s: %s", final.State, final.StatusMessage)
	}

	// Every trial started exactly once.
	store := c.WaitForLeader(t).Server().State()
	jobs, err := store.Jobs(nil)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*cohortv1.Job{}
	perTrial := map[int32]int{}
	for _, j := range jobs {
		if j.SearchId == "hs-1" {
			perTrial[j.SearchTrial]++
			byID[j.Id] = j
		}
	}
	for i := range haSearchTrials {
		if perTrial[int32(i)] != 1 || !final.Trials[i].Started {
			t.Fatalf("trial %d has %d jobs (started %v)", i, perTrial[int32(i)], final.Trials[i].Started)
		}
	}

	// No result lost or changed: each trial's epochs are 1..k with the scripted values,
	// and a trial whose job succeeded has all of them.
	stopped := 0
	for _, tr := range final.Trials {
		job := byID[tr.Job.Id]
		for k, e := range tr.Epochs {
			if int(e.Epoch) != k+1 || e.Metrics["val_auc"] != haMetric(int(tr.Index), k+1) {
				t.Fatalf("trial %d epoch record %d = %v, want epoch %d val_auc %v", tr.Index, k, e, k+1, haMetric(int(tr.Index), k+1))
			}
		}
		switch job.State {
		case cohortv1.JobState_JOB_STATE_SUCCEEDED:
			if len(tr.Epochs) != haSearchEpochs {
				t.Fatalf("succeeded trial %d has %d epochs recorded, want %d", tr.Index, len(tr.Epochs), haSearchEpochs)
			}
		case cohortv1.JobState_JOB_STATE_CANCELLED:
			d := search.Stopped(tr)
			if d == nil || job.StatusMessage != search.StopMessage(d) {
				t.Fatalf("cancelled trial %d: decision %v, status %q", tr.Index, d, job.StatusMessage)
			}
			stopped++
		default:
			t.Fatalf("trial %d ended %s", tr.Index, job.State)
		}
		if n := len(tr.Epochs); acked[tr.Job.Id] < n {
			t.Fatalf("trial %d: %d epochs recorded, only %d acknowledged", tr.Index, n, acked[tr.Job.Id])
		}
	}
	if stopped == 0 {
		t.Fatal("ASHA stopped no trial")
	}

	// The decisions are ASHA replayed over the recorded results in Raft order.
	replay := proto.Clone(final).(*cohortv1.Search)
	for _, tr := range replay.Trials {
		tr.Decisions = nil
	}
	for {
		p, ok := search.NextPending(replay)
		if !ok {
			break
		}
		replay.Trials[p.Trial].Decisions = append(replay.Trials[p.Trial].Decisions, search.DecidePending(replay, p))
	}
	for i, tr := range final.Trials {
		got, want := tr.Decisions, replay.Trials[i].Decisions
		if len(got) != len(want) {
			t.Fatalf("trial %d: %d decisions recorded, replay gives %d", i, len(got), len(want))
		}
		for k := range got {
			if !proto.Equal(got[k], want[k]) && !(math.IsNaN(got[k].Value) && math.IsNaN(want[k].Value)) {
				t.Fatalf("trial %d decision %d = %v, replay gives %v", i, k, got[k], want[k])
			}
		}
	}
	best := search.Best(final, byID)
	if final.BestJobId != final.Trials[best].Job.Id {
		t.Fatalf("best job %q, want trial %d's %q", final.BestJobId, best, final.Trials[best].Job.Id)
	}
	t.Logf("search: %s", final.StatusMessage)
}

func hasDecision(t *cohortv1.SearchTrial, rung int) bool {
	for _, d := range t.Decisions {
		if int(d.Rung) == rung {
			return true
		}
	}
	return false
}
