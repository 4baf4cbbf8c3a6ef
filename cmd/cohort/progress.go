package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// progressPrinter renders a job's progress while it is watched. On a terminal it keeps
// one live line: a bar, epoch, step, samples/s, loss, the latest validation metrics and
// an ETA; elsewhere (a pipe, a log file) it prints one line per state change and epoch.
type progressPrinter struct {
	w   io.Writer
	tty bool
	now func() time.Time

	lastState cohortv1.JobState
	lastEpoch int32
	lastStep  int64
	// firstStep and firstSeen anchor the ETA: steps done since the watch began over
	// the time it took.
	firstStep int64
	firstSeen time.Time
	barOpen   bool
}

// newProgressPrinter returns a printer for w (nil: prints nothing). A w that is a
// character device gets the live line.
func newProgressPrinter(w io.Writer) *progressPrinter {
	p := &progressPrinter{w: w, now: time.Now, lastEpoch: -1, lastStep: -1, firstStep: -1}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// update renders the job's latest state.
func (p *progressPrinter) update(j *cohortv1.Job) {
	if p == nil || p.w == nil {
		return
	}
	changed := j.GetState() != p.lastState
	p.lastState = j.GetState()
	if changed && !terminal(j.GetState()) {
		p.printState(j)
	}
	// A final state is printed after the last progress, so the output ends with it.
	defer func() {
		if changed && terminal(j.GetState()) {
			p.printState(j)
		}
	}()
	pr := j.GetProgress()
	if pr == nil || pr.GetTotalSteps() == 0 {
		return
	}
	if p.firstStep < 0 {
		p.firstStep, p.firstSeen = pr.GetStep(), p.now()
	}
	if !p.tty {
		if pr.GetEpoch() != p.lastEpoch && pr.GetEpoch() > 0 {
			p.lastEpoch = pr.GetEpoch()
			fmt.Fprintf(p.w, "epoch %d/%d step %d/%d loss %.4f %s %.0f samples/s\n",
				pr.GetEpoch(), pr.GetTotalEpochs(), pr.GetStep(), pr.GetTotalSteps(), pr.GetLoss(),
				formatMetrics(j.GetMetrics()), pr.GetSamplesPerSecond())
		}
		return
	}
	if pr.GetStep() == p.lastStep && !terminal(j.GetState()) {
		return
	}
	p.lastStep = pr.GetStep()
	fmt.Fprint(p.w, "\r\033[K"+p.bar(j))
	p.barOpen = true
}

// printState ends the live line and prints the job's state on its own line.
func (p *progressPrinter) printState(j *cohortv1.Job) {
	p.endBar()
	fmt.Fprintf(p.w, "job %s: %s", j.GetId(), stateName(j.GetState()))
	if len(j.GetPendingReasons()) > 0 {
		fmt.Fprintf(p.w, " (%s)", strings.Join(j.GetPendingReasons(), "; "))
	}
	fmt.Fprintln(p.w)
}

// bar is the live line for j.
func (p *progressPrinter) bar(j *cohortv1.Job) string {
	pr := j.GetProgress()
	frac := float64(pr.GetStep()) / float64(pr.GetTotalSteps())
	frac = min(max(frac, 0), 1)
	const width = 24
	filled := int(frac * width)
	var b strings.Builder
	b.WriteString("[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]")
	fmt.Fprintf(&b, " %3.0f%% epoch %d/%d step %d/%d", 100*frac, pr.GetEpoch(), pr.GetTotalEpochs(), pr.GetStep(), pr.GetTotalSteps())
	if sps := pr.GetSamplesPerSecond(); sps > 0 {
		fmt.Fprintf(&b, " %.0f samples/s", sps)
	}
	if pr.GetLoss() > 0 {
		fmt.Fprintf(&b, " loss %.4f", pr.GetLoss())
	}
	if m := j.GetMetrics(); len(m) > 0 {
		b.WriteString(" " + formatMetrics(m))
	}
	if eta, ok := p.eta(pr); ok {
		b.WriteString(" ETA " + formatETA(eta))
	}
	return b.String()
}

// eta extrapolates the steps done since the watch began to the remaining ones.
func (p *progressPrinter) eta(pr *cohortv1.JobProgress) (time.Duration, bool) {
	done := pr.GetStep() - p.firstStep
	elapsed := p.now().Sub(p.firstSeen)
	if done <= 0 || elapsed <= 0 {
		return 0, false
	}
	left := pr.GetTotalSteps() - pr.GetStep()
	return time.Duration(float64(elapsed) * float64(left) / float64(done)), true
}

func (p *progressPrinter) endBar() {
	if p.barOpen {
		fmt.Fprintln(p.w)
		p.barOpen = false
	}
}

// formatETA prints d as m:ss or h:mm:ss.
func formatETA(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
