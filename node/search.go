package node

import (
	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ExpandSearchSpec parses and validates a Search spec and expands it into the search
// record the coordinator proposes: its settings and every trial's parameters and
// TrainingJob spec (trial.job.spec_yaml, admitted by the handler).
func ExpandSearchSpec(raw []byte) (*cohortv1.Search, error) {
	plan, err := jobs.ExpandSearch(raw)
	if err != nil {
		return nil, err
	}
	sr := &cohortv1.Search{
		Name: plan.Name, Namespace: plan.Namespace,
		Metric: plan.Metric, Maximize: plan.Maximize,
		Algorithm: plan.Algorithm, MinEpochs: int32(plan.MinEpochs), MaxEpochs: int32(plan.MaxEpochs),
		ReductionFactor: int32(plan.ReductionFactor), ParallelTrials: int32(plan.ParallelTrials), Seed: plan.Seed,
	}
	for _, t := range plan.Trials {
		sr.Trials = append(sr.Trials, &cohortv1.SearchTrial{
			Index: int32(t.Index), Parameters: t.Parameters, Job: &cohortv1.Job{SpecYaml: t.Spec},
		})
	}
	return sr, nil
}

// searchNamespace is a Search spec's metadata.namespace ("default" when unset).
func searchNamespace(raw []byte) (string, error) {
	_, ns, err := jobs.SearchMetadata(raw)
	return ns, err
}
