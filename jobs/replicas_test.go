package jobs

import (
	"strings"
	"testing"
)

// TestShardReplicasReachTheJobTemplate: parameterServers.replicas defaults to 1 and
// reaches the stored job as shard_replicas: 2 when asked for, which the scheduler reads
// to place backups; 0 (read as 1) for one replica, as jobs were stored before.
func TestShardReplicasReachTheJobTemplate(t *testing.T) {
	for _, tt := range []struct {
		line string
		want int32
	}{{"", 0}, {"      replicas: 1", 0}, {"      replicas: 2", 2}} {
		spec := baseSpec
		if tt.line != "" {
			spec = editSpec(t, edit{Line: 21, Text: tt.line, Insert: true})
		}
		j := mustParse(t, spec)
		tmpl, err := j.JobTemplate()
		if err != nil {
			t.Fatal(err)
		}
		if got := tmpl.GetShardReplicas(); got != tt.want {
			t.Errorf("%q: shard_replicas %d, want %d", strings.TrimSpace(tt.line), got, tt.want)
		}
	}
}
