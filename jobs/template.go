package jobs

import (
	"maps"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// JobTemplate returns the coordinator's record for j: Namespace, Name, Priority, Queue,
// WorkerCount (workers.count), ShardCount, the per-task WorkerResources and
// ShardResources, NodeSelector and Spread (spec.placement), MaxRestarts
// (spec.restartPolicy, DefaultMaxRestarts when absent), and MinWorkers and MaxWorkers
// (workers.min and .max, which make the job elastic). ID, SpecYaml, State
// and the other server-side fields are left for the caller to set. j must be valid
// (Validate's error is returned otherwise).
func (j *TrainingJob) JobTemplate() (*cohortv1.Job, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	w := j.Spec.Resources.Workers
	ps := j.Spec.Resources.ParameterServers
	// Validate has checked that every amount parses and is in range.
	wCPU, _ := ParseCPU(w.CPU)
	wMem, _ := ParseMemory(w.Memory)
	sCPU, _ := ParseCPU(ps.CPU)
	sMem, _ := ParseMemory(ps.Memory)
	wr := &cohortv1.Resources{CpuMillis: wCPU, MemoryBytes: wMem, Gpus: int32(w.GPUs)}
	if w.GPUs > 0 {
		wr.GpuModel = w.GPUModel
		if w.GPUMemory != "" {
			wr.GpuMemoryBytes, _ = ParseMemory(w.GPUMemory)
		}
	}
	var selector map[string]string
	if len(j.Spec.Placement.NodeSelector) > 0 {
		selector = maps.Clone(j.Spec.Placement.NodeSelector)
	}
	maxRestarts := DefaultMaxRestarts
	if rp := j.Spec.RestartPolicy; rp != nil {
		maxRestarts = rp.MaxRestarts
	}
	return &cohortv1.Job{
		Namespace:       j.Metadata.Namespace,
		Name:            j.Metadata.Name,
		Priority:        int32(j.Spec.Priority),
		Queue:           j.Spec.Queue,
		WorkerCount:     int32(w.Count),
		ShardCount:      int32(ps.Shards),
		ShardReplicas:   shardReplicas(ps.Replicas),
		WorkerResources: wr,
		ShardResources:  &cohortv1.Resources{CpuMillis: sCPU, MemoryBytes: sMem},
		NodeSelector:    selector,
		Spread:          j.Spec.Placement.Spread,
		MaxRestarts:     int32(maxRestarts),
		MinWorkers:      int32(w.Min),
		MaxWorkers:      int32(w.Max),
	}, nil
}

// shardReplicas is Job.shard_replicas for spec.resources.parameterServers.replicas: 0
// (read as 1) for one replica, so jobs without backups are stored as before.
func shardReplicas(n int) int32 {
	if n <= 1 {
		return 0
	}
	return int32(n)
}
