package main

import (
	"fmt"
	"math"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// formatTraffic is `job status`'s traffic line: the chief worker's tensor bytes per
// training step, sent (gradient pushes) and received (parameter pulls), on the wire
// and, when compression changed them, as float32. "" when the progress has none.
func formatTraffic(p *cohortv1.JobProgress) string {
	if p.GetPushDenseBytesPerStep() <= 0 && p.GetPullDenseBytesPerStep() <= 0 {
		return ""
	}
	side := func(wire, dense float64) string {
		s := humanBytes(int64(math.Round(wire))) + "/step"
		if math.Round(wire) != math.Round(dense) {
			s += fmt.Sprintf(" (%s uncompressed, %.1fx)", humanBytes(int64(math.Round(dense))), dense/math.Max(wire, 1))
		}
		return s
	}
	return "sent " + side(p.GetPushBytesPerStep(), p.GetPushDenseBytesPerStep()) +
		", received " + side(p.GetPullBytesPerStep(), p.GetPullDenseBytesPerStep())
}
