package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// defaultTermWidth is the width assumed for a terminal whose size is unknown.
const defaultTermWidth = 80

// progressPrinter renders a job's progress while it is watched. On a terminal it keeps
// one live line, redrawn in place and never wider than the terminal (so it never wraps
// into duplicate lines): a bar, epoch, step, ETA, samples/s, latest loss and the
// latest validation metrics, dropping what does not fit. Elsewhere (a pipe, a log
// file) it prints one plain line per progress update and state change.
type progressPrinter struct {
	w   io.Writer
	tty bool
	now func() time.Time
	// width returns the terminal's width (nil or <= 0: defaultTermWidth).
	width func() int

	lastState cohortv1.JobState
	lastEpoch int32
	lastStep  int64
	// firstStep and firstSeen anchor the ETA: steps done since the watch began over
	// the time they took (the progress's own timestamps when it has them).
	firstStep int64
	firstSeen time.Time
	barOpen   bool
}

// newProgressPrinter returns a printer for w (nil: prints nothing). A w that is a
// terminal gets the live line, as wide as the terminal.
func newProgressPrinter(w io.Writer) *progressPrinter {
	p := &progressPrinter{w: w, now: time.Now, lastEpoch: -1, lastStep: -1, firstStep: -1}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
			fd := int(f.Fd())
			p.width = func() int { return termWidth(fd) }
		}
	}
	return p
}

// termWidth is the column count of the terminal on fd (0 when unknown).
func termWidth(fd int) int {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

func (p *progressPrinter) columns() int {
	if p.width != nil {
		if w := p.width(); w > 0 {
			return w
		}
	}
	return defaultTermWidth
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
	// Progress only moves forward on screen (an older report arriving late is not
	// drawn over a newer one).
	if pr.GetStep() < p.lastStep || (pr.GetStep() == p.lastStep && pr.GetEpoch() == p.lastEpoch && !terminal(j.GetState())) {
		return
	}
	p.lastStep, p.lastEpoch = pr.GetStep(), pr.GetEpoch()
	if p.firstStep < 0 {
		p.firstStep, p.firstSeen = pr.GetStep(), p.progressTime(pr)
	}
	if !p.tty {
		parts, _ := p.parts(j, false)
		fmt.Fprintln(p.w, strings.Join(parts, " "))
		return
	}
	fmt.Fprint(p.w, "\r\033[K"+p.bar(j, p.columns()))
	p.barOpen = true
}

// progressTime is when pr was measured: its own timestamp, else now.
func (p *progressPrinter) progressTime(pr *cohortv1.JobProgress) time.Time {
	if ns := pr.GetTimeUnixNano(); ns > 0 {
		return time.Unix(0, ns)
	}
	return p.now()
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

// parts are the fields of a progress line, most important first: percent, epoch,
// step, ETA, samples/s and loss, then from index metrics on each validation metric.
// short is the compact form for narrow terminals: "ep", "k/s", metric names without
// "val_".
func (p *progressPrinter) parts(j *cohortv1.Job, short bool) (parts []string, metrics int) {
	pr := j.GetProgress()
	frac := min(max(float64(pr.GetStep())/float64(pr.GetTotalSteps()), 0), 1)
	epoch, rate := "epoch", " samples/s"
	if short {
		epoch, rate = "ep", "/s"
	}
	parts = []string{fmt.Sprintf("%.0f%%", 100*frac), fmt.Sprintf("%s %d/%d", epoch, pr.GetEpoch(), pr.GetTotalEpochs()),
		fmt.Sprintf("step %d/%d", pr.GetStep(), pr.GetTotalSteps())}
	if eta, ok := p.eta(j); ok {
		parts = append(parts, "ETA "+formatETA(eta))
	}
	if sps := pr.GetSamplesPerSecond(); sps > 0 {
		parts = append(parts, formatRate(sps)+rate)
	}
	if loss := pr.GetLoss(); loss > 0 {
		parts = append(parts, fmt.Sprintf("loss %.4f", loss))
	}
	metrics = len(parts)
	m := j.GetMetrics()
	keys := slices.Sorted(maps.Keys(m))
	for _, k := range keys {
		name := k
		if short {
			name = strings.TrimPrefix(k, "val_")
		}
		parts = append(parts, fmt.Sprintf("%s %.4f", name, m[k]))
	}
	return parts, metrics
}

// bar is the live line for j, at most width-1 columns (a line that fills the last
// column makes some terminals wrap): the bar and the fields that fit, in order; a
// metric that does not fit is left out and a shorter one after it may still fit.
func (p *progressPrinter) bar(j *cohortv1.Job, width int) string {
	limit := max(width-1, 10)
	barWidth := 20
	parts, metrics := p.parts(j, false)
	if len(strings.Join(parts, " "))+barWidth+3 > limit {
		parts, metrics = p.parts(j, true)
		barWidth = min(12, max(limit/6, 4))
	}
	pr := j.GetProgress()
	frac := min(max(float64(pr.GetStep())/float64(pr.GetTotalSteps()), 0), 1)
	var b strings.Builder
	filled := int(frac * float64(barWidth))
	b.WriteString("[" + strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled) + "]")
	for i, s := range parts {
		if b.Len()+1+len(s) > limit {
			if i >= metrics {
				continue
			}
			break
		}
		b.WriteByte(' ')
		b.WriteString(s)
	}
	return b.String()
}

// eta extrapolates the step rate to the remaining steps: the rate since the watch
// began once two progress points were seen, else the rate since the job started.
func (p *progressPrinter) eta(j *cohortv1.Job) (time.Duration, bool) {
	pr := j.GetProgress()
	left := pr.GetTotalSteps() - pr.GetStep()
	if left <= 0 {
		return 0, terminal(j.GetState())
	}
	at := p.progressTime(pr)
	done, elapsed := pr.GetStep()-p.firstStep, at.Sub(p.firstSeen)
	if done <= 0 || elapsed <= 0 {
		start := j.GetStartTimeUnixNano()
		if start <= 0 || pr.GetTimeUnixNano() <= start || pr.GetStep() <= 0 {
			return 0, false
		}
		done, elapsed = pr.GetStep(), time.Duration(pr.GetTimeUnixNano()-start)
	}
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

// formatRate prints a rate with a k or M suffix above a thousand.
func formatRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
