package scheduler

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Replicated shards (spec.resources.parameterServers.replicas: 2, issue 18): every
// shard of the job gets a backup allocation (Allocation.replica 1) next to its primary
// (replica 0). The backup receives every aggregated update before the primary
// acknowledges the step, so it must not share the primary's fate: a shard's backup is
// never placed on its primary's node (anti-affinity, a rule, not a preference). Backups
// are placed after the primaries, as part of the same gang: all or nothing.

// ShardReplicas returns how many copies of each shard a job runs: job.shard_replicas,
// with 0 (jobs stored before the field existed) read as 1.
func ShardReplicas(job *cohortv1.Job) int32 {
	return max(job.GetShardReplicas(), 1)
}

// BackupAllocID returns the deterministic ID of the backup of a job's shard index in
// generation gen.
func BackupAllocID(jobID string, index int32, gen uint64) string {
	return AllocIDGen(jobID, cohortv1.TaskKind_TASK_KIND_PS_SHARD, index, gen) + "-b"
}

// IsBackup reports whether a is the backup copy of a parameter-server shard.
func IsBackup(a *cohortv1.Allocation) bool {
	return a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD && a.GetReplica() > 0
}

// placeBackups places one backup for each primary shard allocation in primaries on
// a candidate of cl (in the order of less) other than the primary's node. It returns the
// backups and the reservations it took, or a reason when some shard's backup has no
// node: the reservations are then already undone by the caller's rollback of reserved.
func (cl *Cluster) placeBackups(job *cohortv1.Job, primaries []*cohortv1.Allocation, g group, less func(a, b *candidate) bool, gen uint64) ([]*cohortv1.Allocation, []reservation, string) {
	need := toResources(g.res)
	var eligible []*candidate
	for _, c := range cl.cands {
		if matches(c.node, g.role, job.GetNodeSelector(), g.res) {
			eligible = append(eligible, c)
		}
	}
	held := map[*candidate]int{}
	for _, p := range primaries {
		for _, c := range eligible {
			if c.node.GetId() == p.GetNodeId() {
				held[c]++
			}
		}
	}
	rank := spreadShards(held, less)
	res := proto.Clone(resourcesOrZero(g.res)).(*cohortv1.Resources)
	var (
		out      []*cohortv1.Allocation
		reserved []reservation
		missing  []string
	)
	for _, p := range primaries {
		var best *candidate
		for _, c := range eligible {
			if c.node.GetId() == p.GetNodeId() || !c.free.fits(need) {
				continue
			}
			if best == nil || rank(c, best) {
				best = c
			}
		}
		if best == nil {
			missing = append(missing, fmt.Sprintf("ps %d (primary on %s)", p.GetIndex(), p.GetNodeId()))
			continue
		}
		best.free = best.free.sub(need)
		held[best]++
		reserved = append(reserved, reservation{best, need})
		out = append(out, &cohortv1.Allocation{
			Id:         BackupAllocID(job.GetId(), p.GetIndex(), gen),
			JobId:      job.GetId(),
			Kind:       cohortv1.TaskKind_TASK_KIND_PS_SHARD,
			Index:      p.GetIndex(),
			NodeId:     best.node.GetId(),
			State:      cohortv1.TaskState_TASK_STATE_PENDING,
			Generation: gen,
			Resources:  res,
			Replica:    1,
		})
	}
	if len(missing) == 0 {
		return out, reserved, ""
	}
	return out, reserved, backupReason(missing, eligible, need)
}

// backupReason explains why some shards' backups could not be placed: each backup
// must be on another node than its primary, with room for a shard.
func backupReason(missing []string, eligible []*candidate, need resources) string {
	const head = "spec.resources.parameterServers.replicas: 2 needs each shard's backup on a different parameter-server node than its primary"
	if len(eligible) < 2 {
		ids := make([]string, len(eligible))
		for i, c := range eligible {
			ids[i] = c.node.GetId()
		}
		return fmt.Sprintf("%s: only %d eligible parameter-server node (%s); add one or set replicas: 1", head, len(eligible), strings.Join(ids, ", "))
	}
	var room []string
	for _, c := range eligible {
		if c.free.fits(need) {
			room = append(room, c.node.GetId())
		}
	}
	slices.Sort(room)
	why := "no other eligible node has (" + describe(need) + ") free"
	if len(room) > 0 {
		why = "the eligible nodes with (" + describe(need) + ") free (" + strings.Join(room, ", ") + ") hold those primaries"
	}
	return fmt.Sprintf("%s: no node for the backup of %s: %s", head, strings.Join(missing, ", "), why)
}

// BackupPlan places new backups for a running job with replicated shards: one for each
// shard index that has a live primary in allocs (the job's allocations) and no live
// backup (it was lost, or promoted to primary), on another node than that primary.
// The plan reserves their capacity in the Cluster; ok is false when nothing is missing
// or some missing backup has no node now (the next pass tries again).
func (cl *Cluster) BackupPlan(job *cohortv1.Job, allocs []*cohortv1.Allocation) (plan Plan, ok bool) {
	// No quota re-check in Fits (job unset): a running job's quota already counts its
	// backups (demand).
	plan = Plan{JobID: job.GetId(), Selector: job.GetNodeSelector()}
	if ShardReplicas(job) < 2 || cl.err != nil {
		return plan, false
	}
	var primaries []*cohortv1.Allocation
	backed, taken := map[int32]bool{}, map[string]bool{}
	for _, a := range allocs {
		taken[a.GetId()] = true
		if a.GetKind() != cohortv1.TaskKind_TASK_KIND_PS_SHARD || taskTerminal(a.GetState()) {
			continue
		}
		if IsBackup(a) {
			backed[a.GetIndex()] = true
		} else {
			primaries = append(primaries, a)
		}
	}
	var missing []*cohortv1.Allocation
	for _, p := range primaries {
		if !backed[p.GetIndex()] {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return plan, false
	}
	slices.SortFunc(missing, func(a, b *cohortv1.Allocation) int { return int(a.GetIndex()) - int(b.GetIndex()) })
	g := groups(job)[1]
	gen := max(job.GetGeneration(), 1)
	backups, took, reason := cl.placeBackups(job, missing, g, spreadLess, gen)
	if reason != "" {
		for _, r := range took {
			r.c.free = r.c.free.add(r.need)
		}
		plan.Reasons = []string{reason}
		return plan, false
	}
	for _, b := range backups {
		// The first backup of a shard at this generation is "<id>-b"; a later one
		// (the first was lost) "<id>-b2", "<id>-b3", ...
		base := b.Id
		for n := 2; taken[b.Id]; n++ {
			b.Id = fmt.Sprintf("%s%d", base, n)
		}
		taken[b.Id] = true
	}
	plan.Allocations = backups
	return plan, true
}
