package hrdata

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
)

// PerformanceColumns are the CSV header columns of GeneratePerformance, in order.
var PerformanceColumns = []string{
	"EmployeeID", "Month", "HoursWorked", "OvertimeHours", "ProjectsActive",
	"TrainingHours", "AbsenceDays", "PeerFeedback", "PerformanceScore",
}

// Limits of PerformanceConfig.
const (
	// MaxPerformanceMonths bounds PerformanceConfig.Months.
	MaxPerformanceMonths = 1200
	// MaxPerformanceRows bounds Employees × Months.
	MaxPerformanceRows = 10_000_000
)

// PerformanceStart is the first Month of a generated table.
const PerformanceStart = "2021-01"

// performanceBurnIn is the number of months simulated before the first written one, so
// that the lagged terms and the autoregressive processes are settled at month 0.
const performanceBurnIn = 12

// PerformanceConfig configures GeneratePerformance. Zero fields take the defaults of
// DefaultPerformanceConfig (Seed 0 is a valid seed and is kept).
type PerformanceConfig struct {
	// Employees is the number of employees, 1.. (default 200).
	Employees int
	// Months is the number of monthly rows per employee, 1..MaxPerformanceMonths
	// (default 48), from PerformanceStart on.
	Months int
	// Seed selects the pseudo-random stream; equal configurations give identical output.
	Seed int64
}

// DefaultPerformanceConfig returns 200 employees over 48 months (2021-01 to 2024-12),
// seed 42: the configuration of jobs/data/performance-sample.csv.
func DefaultPerformanceConfig() PerformanceConfig {
	return PerformanceConfig{Employees: 200, Months: 48, Seed: 42}
}

// GeneratePerformance writes a monthly work history as CSV (header PerformanceColumns):
// one row per employee per month, employee by employee (E0001, E0002, ...), months in
// order from 2021-01. It is the sequence counterpart of GenerateAttrition, for
// forecasting next quarter's rating with an LSTM.
//
// # The documented relationship to next quarter's rating
//
// Employee i has a latent skill s ~ N(0, 1), a trend τ per month (a third improve,
// τ ~ U(0.005, 0.025); a third decline, τ ~ -U(0.005, 0.025); a third are flat,
// τ ~ U(-0.003, 0.003)), an overtime propensity, a training propensity and a "form"
// f_m = 0.7 f_{m-1} + N(0, 0.12²) that carries over from month to month. A workload
// process w_m = 0.85 w_{m-1} + 0.5 N(0, 1) drives overtime and projects. For month m
// (calendar month c, m = 0 at 2021-01):
//
//	OvertimeHours_m   = clamp(propensity + 6 w_m + Q4(c) + N(0, 2²), 0, 80)     Q4: Oct +3, Nov +5, Dec +4
//	ProjectsActive_m  = clamp(round(2.5 + 0.6 s + 0.8 w_m + N(0, 0.6²)), 1, 8)
//	TrainingHours_m   = 4·U{1..6} with probability p_i (×1.5 in Jan and Sep, ×0.5 in Q4), else 0
//	AbsenceDays_m     ~ Poisson(0.5 + 0.08 max(0, OvertimeHours_{m-1} - 10) + 0.4 [c ∈ {Jan, Feb}]), ≤ 15
//	HoursWorked_m     = clamp(152 + OvertimeHours_m - 7.5 AbsenceDays_m + H(c) + N(0, 4²), 40, 260)   H: Aug -12, Dec -16
//	PeerFeedback_m    = clamp(round(3 + 0.8 (0.5 s + f_m) + N(0, 0.5²)), 1, 5)
//
//	PerformanceScore_m = clamp(2.9 + 0.5 s + τ (m - 24) + S(c)
//	                     + 0.015 (TrainingHours_{m-3} + TrainingHours_{m-4} + TrainingHours_{m-5})
//	                     - 0.04 max(0, mean(OvertimeHours_{m-8..m-3}) - 12)      (burnout)
//	                     - 0.06 AbsenceDays_m
//	                     + 0.15 (PeerFeedback_{m-3} - 3)
//	                     + f_m + N(0, 0.15²), 1, 5)                                S: Aug -0.1, Dec -0.2
//
// Every driver of PerformanceScore_m except the current month's absences, form and noise
// is visible three months earlier, so the score three months ahead is predictable from
// the last twelve months (skill and trend from the past scores, the lagged training,
// overtime and feedback terms from the window): a linear model on a 12-month window
// beats the seasonal-naive forecast (the score twelve months earlier), and the
// non-linear burnout term leaves room for an LSTM to do better still. Values are
// written with at most two decimals; counts as integers.
//
// Output is deterministic: each employee draws from its own PCG stream seeded from
// Seed and its number, so the same configuration gives byte-identical CSV, more
// employees extend the table, and more months extend each employee's history.
func GeneratePerformance(w io.Writer, cfg PerformanceConfig) error {
	def := DefaultPerformanceConfig()
	if cfg.Employees == 0 {
		cfg.Employees = def.Employees
	}
	if cfg.Months == 0 {
		cfg.Months = def.Months
	}
	switch {
	case cfg.Employees < 0:
		return fmt.Errorf("hrdata: Employees %d: want >= 1", cfg.Employees)
	case cfg.Months < 0 || cfg.Months > MaxPerformanceMonths:
		return fmt.Errorf("hrdata: Months %d: want 1..%d", cfg.Months, MaxPerformanceMonths)
	case cfg.Employees > MaxPerformanceRows/cfg.Months:
		return fmt.Errorf("hrdata: %d employees × %d months is more than %d rows", cfg.Employees, cfg.Months, MaxPerformanceRows)
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(PerformanceColumns); err != nil {
		return fmt.Errorf("hrdata: write header: %w", err)
	}
	for i := range cfg.Employees {
		h := simulateEmployee(cfg.Seed, i, cfg.Months)
		id := fmt.Sprintf("E%04d", i+1)
		for m := range cfg.Months {
			r := h[performanceBurnIn+m]
			rec := []string{
				id, monthName(m),
				fmt2(r.hours), fmt2(r.overtime), strconv.Itoa(r.projects),
				strconv.Itoa(r.training), strconv.Itoa(r.absence), strconv.Itoa(r.feedback),
				fmt2(r.score),
			}
			if err := cw.Write(rec); err != nil {
				return fmt.Errorf("hrdata: write %s %s: %w", id, rec[1], err)
			}
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("hrdata: write: %w", err)
	}
	return nil
}

// monthName returns "YYYY-MM" of month m after PerformanceStart.
func monthName(m int) string { return fmt.Sprintf("%04d-%02d", 2021+m/12, m%12+1) }

// round2 rounds v to two decimals, as written; the model uses the written values.
func round2(v float64) float64 { return math.Round(v*100) / 100 }

// fmt2 formats a value of round2 with at most two decimals.
func fmt2(v float64) string { return strconv.FormatFloat(round2(v), 'f', -1, 64) }

// overtimeSeason is Q4's extra overtime in calendar month c.
func overtimeSeason(c int) float64 {
	switch c {
	case 10:
		return 3
	case 11:
		return 5
	case 12:
		return 4
	}
	return 0
}

// hoursSeason is the holiday dip in hours worked in calendar month c.
func hoursSeason(c int) float64 {
	switch c {
	case 8:
		return -12
	case 12:
		return -16
	}
	return 0
}

// scoreSeason is the seasonal term S of the score in calendar month c.
func scoreSeason(c int) float64 {
	switch c {
	case 8:
		return -0.1
	case 12:
		return -0.2
	}
	return 0
}

// monthRecord is one simulated month of one employee.
type monthRecord struct {
	hours, overtime, score                float64
	projects, training, absence, feedback int
}

// employeeStream is the PCG stream constant of the performance generator ("perf").
const employeeStream = 0x70657266

// simulateEmployee returns months -performanceBurnIn..months-1 of employee i (index 0
// is the first burn-in month), following the documented model.
func simulateEmployee(seed int64, i, months int) []monthRecord {
	g := &generator{rng: rand.New(rand.NewPCG(uint64(seed), employeeStream^(uint64(i)<<20)))}
	skill := g.normal()
	var trend float64
	switch g.intn(3) {
	case 0:
		trend = 0.005 + 0.02*g.uniform()
	case 1:
		trend = -(0.005 + 0.02*g.uniform())
	default:
		trend = -0.003 + 0.006*g.uniform()
	}
	otPropensity := 4 + 10*g.uniform()
	trainProb := 0.1 + 0.25*g.uniform()

	n := performanceBurnIn + months
	h := make([]monthRecord, n)
	var work, form float64
	for k := range n {
		m := k - performanceBurnIn // month index, negative during burn-in
		c := ((m%12)+12)%12 + 1    // calendar month 1..12
		work = 0.85*work + 0.5*g.normal()
		form = 0.7*form + 0.12*g.normal()
		r := &h[k]

		r.overtime = round2(math.Min(80, math.Max(0, otPropensity+6*work+overtimeSeason(c)+2*g.normal())))
		r.projects = clampInt(int(math.Round(2.5+0.6*skill+0.8*work+0.6*g.normal())), 1, 8)

		p := trainProb
		switch c {
		case 1, 9:
			p *= 1.5
		case 10, 11, 12:
			p *= 0.5
		}
		if g.uniform() < p {
			r.training = 4 * g.between(1, 6)
		}

		lambda := 0.5
		if k > 0 {
			lambda += 0.08 * math.Max(0, h[k-1].overtime-10)
		}
		if c == 1 || c == 2 {
			lambda += 0.4
		}
		r.absence = min(g.poisson(lambda), 15)

		r.hours = round2(math.Min(260, math.Max(40, 152+r.overtime-7.5*float64(r.absence)+hoursSeason(c)+4*g.normal())))
		r.feedback = clampInt(int(math.Round(3+0.8*(0.5*skill+form)+0.5*g.normal())), 1, 5)

		score := 2.9 + 0.5*skill + trend*float64(m-24) + scoreSeason(c)
		score -= 0.06 * float64(r.absence)
		score += form + 0.15*g.normal()
		if k >= 8 {
			score += 0.015 * float64(h[k-3].training+h[k-4].training+h[k-5].training)
			var ot float64
			for j := k - 8; j <= k-3; j++ {
				ot += h[j].overtime
			}
			score -= 0.04 * math.Max(0, ot/6-12)
			score += 0.15 * float64(h[k-3].feedback-3)
		}
		r.score = round2(math.Min(5, math.Max(1, score)))
	}
	return h
}

// poisson draws a Poisson variate by inversion of uniform draws (lambda small).
func (g *generator) poisson(lambda float64) int {
	u := g.uniform()
	p := math.Exp(-lambda)
	cum := p
	k := 0
	for u > cum && k < 100 {
		k++
		p *= lambda / float64(k)
		cum += p
	}
	return k
}
