package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkAuditOverhead measures what the report (audit with bootstrap intervals,
// calibration, groups and intersections, and permutation importance with repeats: 5)
// adds to the wall time of `cohort dev --run` on the attrition example: each iteration
// runs the example as it is and the example without its audit and with
// explain.permutation.repeats: 0, interleaved, as separate processes. Metrics:
// ms/job of each and overhead-% = (with - without) / without.
//
//	go test -run '^$' -bench BenchmarkAuditOverhead -benchtime 5x ./cmd/cohort
func BenchmarkAuditOverhead(b *testing.B) {
	bin := buildBinary(b)
	dir := b.TempDir()
	raw, err := os.ReadFile(repoPath(b, "jobs/examples/attrition-mlp.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	with := strings.Replace(string(raw), "file://jobs/", "file://"+repoPath(b, "jobs")+"/", 1)
	cut := strings.Index(with, "  audit:")
	if cut < 0 {
		b.Fatal("the example has no audit section")
	}
	without := with[:cut] + "  explain: {permutation: {repeats: 0}}\n"
	specs := map[string]string{"with": with, "without": without}
	for name, spec := range specs {
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(spec), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	run := func(name string) time.Duration {
		start := time.Now()
		cmd := exec.Command(bin, "dev", "--data-dir", b.TempDir(), "--data-root", repoPath(b, "jobs"), "--run", filepath.Join(dir, name+".yaml"), "-o", "json")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("dev --run %s: %v\n%s", name, err, out)
		}
		return time.Since(start)
	}
	var tWith, tWithout time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			tWith += run("with")
			tWithout += run("without")
		} else {
			tWithout += run("without")
			tWith += run("with")
		}
	}
	b.ReportMetric(float64(tWith.Milliseconds())/float64(b.N), "ms-with/job")
	b.ReportMetric(float64(tWithout.Milliseconds())/float64(b.N), "ms-without/job")
	b.ReportMetric(100*(tWith.Seconds()-tWithout.Seconds())/tWithout.Seconds(), "overhead-%")
}
