package jobs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func TestPlacementFields(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("examples", "attrition-mlp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	withWorkers := func(extra string) string {
		return strings.Replace(string(base), "    workers: {count: 2, min: 1, max: 4, gpus: 0, cpu: \"1\", memory: 1Gi}", extra, 1)
	}
	if withWorkers("x") == string(base) {
		t.Fatal("example's workers line changed; update this test")
	}
	tests := []struct {
		name    string
		spec    string
		want    func(*cohortv1.Job)
		wantErr string
	}{
		{name: "selector, spread and gpu needs reach the template",
			spec: withWorkers("    workers: {count: 2, gpus: 1, gpuModel: H100, gpuMemory: 80Gi}") +
				"  placement:\n    nodeSelector: {zone: eu-1a, cohort.dev/pool: gpu}\n    spread: true\n",
			want: func(j *cohortv1.Job) {
				j.WorkerResources.Gpus = 1
				j.WorkerResources.GpuModel = "H100"
				j.WorkerResources.GpuMemoryBytes = 80 << 30
				j.NodeSelector = map[string]string{"zone": "eu-1a", "cohort.dev/pool": "gpu"}
				j.Spread = true
			}},
		{name: "selector value of the wrong type",
			spec:    string(base) + "  placement:\n    nodeSelector: {zone: [a]}\n",
			wantErr: "spec.placement.nodeSelector.zone (line"},
		{name: "duplicate selector key",
			spec:    string(base) + "  placement:\n    nodeSelector: {zone: a, zone: b}\n",
			wantErr: `duplicate`},
		{name: "restart policy sets the budget",
			spec: string(base) + "  restartPolicy: {maxRestarts: 0}\n",
			want: func(j *cohortv1.Job) { j.MaxRestarts = 0 }},
		{name: "restart budget out of range",
			spec:    string(base) + "  restartPolicy: {maxRestarts: 101}\n",
			wantErr: "spec.restartPolicy.maxRestarts (line"},
		{name: "unknown restart policy field",
			spec:    string(base) + "  restartPolicy: {onFailure: always}\n",
			wantErr: "onFailure"},
		{name: "unknown placement field is an error naming its path",
			spec:    string(base) + "  placement:\n    affinity: x\n",
			wantErr: "affinity"},
		{name: "bad label key",
			spec:    string(base) + "  placement:\n    nodeSelector: {\"-bad\": x}\n",
			wantErr: `spec.placement.nodeSelector (line|label key "-bad"`},
		{name: "bad label value",
			spec:    string(base) + "  placement:\n    nodeSelector: {zone: \"a b\"}\n",
			wantErr: `spec.placement.nodeSelector.zone (line|label value "a b"`},
		{name: "gpu model without gpus",
			spec:    withWorkers("    workers: {count: 2, gpuModel: H100}"),
			wantErr: "spec.resources.workers.gpus (line|must be at least 1 when gpuModel or gpuMemory is set"},
		{name: "bad gpu memory",
			spec:    withWorkers("    workers: {count: 2, gpus: 1, gpuMemory: lots}"),
			wantErr: "spec.resources.workers.gpuMemory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := Parse([]byte(tt.spec))
			if tt.wantErr != "" {
				for _, want := range strings.Split(tt.wantErr, "|") {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("Parse error %v, want one naming %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := j.JobTemplate()
			if err != nil {
				t.Fatal(err)
			}
			want := &cohortv1.Job{Namespace: "default", Name: "attrition-mlp", Priority: 50, Queue: "default",
				WorkerCount: 2, ShardCount: 2,
				WorkerResources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 1 << 30},
				ShardResources:  &cohortv1.Resources{CpuMillis: 500, MemoryBytes: 512 << 20}, MaxRestarts: DefaultMaxRestarts}
			tt.want(want)
			// workers.min and .max have their own test (TestJobTemplate).
			want.MinWorkers, want.MaxWorkers = got.MinWorkers, got.MaxWorkers
			if !proto.Equal(got, want) {
				t.Fatalf("JobTemplate() = %v\nwant %v", got, want)
			}
		})
	}
}
