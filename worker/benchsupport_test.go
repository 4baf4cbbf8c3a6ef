package worker

import (
	"testing"

	"github.com/cohort-dev/cohort/jobs"
)

// TestWorkerThreads checks the rounding of a worker's CPU request to goroutines.
func TestWorkerThreads(t *testing.T) {
	for _, c := range []struct {
		cpu  string
		want int
	}{{"1", 1}, {"2", 2}, {"1.5", 2}, {"500m", 1}, {"2000m", 2}, {"0", 1}, {"", 1}, {"bogus", 1}} {
		var s jobs.Spec
		s.Resources.Workers.CPU = c.cpu
		if got := WorkerThreads(&s); got != c.want {
			t.Errorf("cpu %q: %d threads, want %d", c.cpu, got, c.want)
		}
	}
}
