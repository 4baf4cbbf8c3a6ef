package web

import (
	"fmt"
	"math"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// trafficText is the job page's "Bytes/step" figure: the chief worker's tensor bytes
// per training step, sent (gradient pushes) and received (parameter pulls), on the wire
// and as float32 when training.compression changed them; "" when the progress has none.
func trafficText(p *cohortv1.JobProgress) string {
	if p.GetPushDenseBytesPerStep() <= 0 && p.GetPullDenseBytesPerStep() <= 0 {
		return ""
	}
	side := func(what string, wire, dense float64) string {
		w, d := math.Round(wire), math.Round(dense)
		if w == d {
			return fmt.Sprintf("%s %s", what, kib(w))
		}
		return fmt.Sprintf("%s %s of %s", what, kib(w), kib(d))
	}
	return side("sent", p.GetPushBytesPerStep(), p.GetPushDenseBytesPerStep()) + ", " +
		side("received", p.GetPullBytesPerStep(), p.GetPullDenseBytesPerStep())
}

// kib formats a byte count in KiB with one decimal (bytes below 1 KiB).
func kib(b float64) string {
	if b < 1024 {
		return fmt.Sprintf("%.0f B", b)
	}
	return fmt.Sprintf("%.1f KiB", b/1024)
}
