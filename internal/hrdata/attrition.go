// Package hrdata generates synthetic HR-analytics tables for examples, tests and
// benchmarks. GenerateAttrition writes an employee-attrition table shaped like IBM's
// "HR Analytics Employee Attrition & Performance" data set: the same 27 feature columns
// with plausible marginal distributions and the same internal consistency
// (TotalWorkingYears <= Age-18, YearsAtCompany <= TotalWorkingYears, job roles that
// belong to their department, income that follows the job level, ...), plus an
// Attrition label drawn from a documented logistic model that a classifier can learn.
//
// # The attrition model
//
// Each row's label is Attrition = "Yes" with probability sigmoid(logit), where
//
//	logit = b0                                  (b0 = AttritionIntercept, calibrated to ~16% Yes)
//	      + 1.5  if OverTime = Yes
//	      + 0.9  if MaritalStatus = Single
//	      + 0.7  if StockOptionLevel = 0
//	      + 0.8  if BusinessTravel = Travel_Frequently, + 0.3 if Travel_Rarely
//	      + 0.9  if JobRole = Sales Representative
//	      + 0.45 * (4 - EnvironmentSatisfaction)    (scales 1..4, low is worse)
//	      + 0.45 * (4 - JobSatisfaction)
//	      + 0.5  * (4 - JobInvolvement)
//	      + 0.5  * (4 - WorkLifeBalance)
//	      + 0.05 * (DistanceFromHome - 1)
//	      + 0.15 * NumCompaniesWorked
//	      + 0.35 * (3 - min(YearsWithCurrManager, 3))
//	      + 0.05 * max(0, 35 - Age)                 (young employees leave more)
//	      - 0.35 * (JobLevel - 1)
//	      - 0.9  * ln(MonthlyIncome / 5000)        (low pay leaves more)
//
// The intercept makes about 16% of rows positive; the true logit ranks rows with an
// AUC of about 0.87, and a plain logistic regression on one-hot/standardised columns
// reaches a validation AUC above 0.80. RelationshipSatisfaction, Gender, Education,
// EducationField, PercentSalaryHike, PerformanceRating and TrainingTimesLastYear carry
// no signal, as distractors.
//
// # A controllable disparity
//
// AttritionConfig.Disparity (0..1) makes Gender matter through a proxy, as it does in
// real data: each Female employee who would not work overtime does so with probability
// Disparity (drawn from a second stream, so Disparity 0 leaves the table byte-identical).
// OverTime is the strongest attrition driver, so a model that never sees Gender still
// flags women more often: the selection rate of men falls below women's and the audit's
// impact ratio drops (about 0.45 at Disparity 0.6 on the default table, near 1 at 0).
//
// Output is deterministic: the same AttritionConfig gives byte-identical CSV (PCG
// seeded from Seed; only Float64 draws, no version-dependent samplers).
package hrdata

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
)

// AttritionIntercept is b0 of the attrition model, calibrated so that about 16% of
// generated rows have Attrition = "Yes".
const AttritionIntercept = -7.19

// AttritionColumns are the CSV header columns, in order. The label is last.
var AttritionColumns = []string{
	"Age", "BusinessTravel", "Department", "DistanceFromHome", "Education", "EducationField",
	"EnvironmentSatisfaction", "Gender", "JobInvolvement", "JobLevel", "JobRole", "JobSatisfaction",
	"MaritalStatus", "MonthlyIncome", "NumCompaniesWorked", "OverTime", "PercentSalaryHike",
	"PerformanceRating", "RelationshipSatisfaction", "StockOptionLevel", "TotalWorkingYears",
	"TrainingTimesLastYear", "WorkLifeBalance", "YearsAtCompany", "YearsInCurrentRole",
	"YearsSinceLastPromotion", "YearsWithCurrManager", "Attrition",
}

// MaxAttritionRows bounds AttritionConfig.Rows.
const MaxAttritionRows = 10_000_000

// AttritionConfig configures GenerateAttrition.
type AttritionConfig struct {
	// Rows is the number of employees (data rows after the header), 0..MaxAttritionRows.
	Rows int
	// Seed selects the pseudo-random stream; equal seeds give identical output.
	Seed int64
	// Disparity, 0..1, is the probability that a Female employee without overtime is
	// given overtime (see the package comment); 0 adds no disparity.
	Disparity float64
}

// DefaultAttritionConfig returns the size of the original IBM table (1470 rows), seed 42.
func DefaultAttritionConfig() AttritionConfig {
	return AttritionConfig{Rows: 1470, Seed: 42}
}

// employee is one generated row.
type employee struct {
	Age                      int
	BusinessTravel           string
	Department               string
	DistanceFromHome         int
	Education                int
	EducationField           string
	EnvironmentSatisfaction  int
	Gender                   string
	JobInvolvement           int
	JobLevel                 int
	JobRole                  string
	JobSatisfaction          int
	MaritalStatus            string
	MonthlyIncome            int
	NumCompaniesWorked       int
	OverTime                 bool
	PercentSalaryHike        int
	PerformanceRating        int
	RelationshipSatisfaction int
	StockOptionLevel         int
	TotalWorkingYears        int
	TrainingTimesLastYear    int
	WorkLifeBalance          int
	YearsAtCompany           int
	YearsInCurrentRole       int
	YearsSinceLastPromotion  int
	YearsWithCurrManager     int
	Attrition                bool
}

// record formats e in AttritionColumns order.
func (e *employee) record() []string {
	yesNo := func(b bool) string {
		if b {
			return "Yes"
		}
		return "No"
	}
	itoa := strconv.Itoa
	return []string{
		itoa(e.Age), e.BusinessTravel, e.Department, itoa(e.DistanceFromHome), itoa(e.Education),
		e.EducationField, itoa(e.EnvironmentSatisfaction), e.Gender, itoa(e.JobInvolvement),
		itoa(e.JobLevel), e.JobRole, itoa(e.JobSatisfaction), e.MaritalStatus, itoa(e.MonthlyIncome),
		itoa(e.NumCompaniesWorked), yesNo(e.OverTime), itoa(e.PercentSalaryHike),
		itoa(e.PerformanceRating), itoa(e.RelationshipSatisfaction), itoa(e.StockOptionLevel),
		itoa(e.TotalWorkingYears), itoa(e.TrainingTimesLastYear), itoa(e.WorkLifeBalance),
		itoa(e.YearsAtCompany), itoa(e.YearsInCurrentRole), itoa(e.YearsSinceLastPromotion),
		itoa(e.YearsWithCurrManager), yesNo(e.Attrition),
	}
}

// GenerateAttrition writes cfg.Rows synthetic employees as CSV (with a header row of
// AttritionColumns) to w.
func GenerateAttrition(w io.Writer, cfg AttritionConfig) error {
	if cfg.Rows < 0 || cfg.Rows > MaxAttritionRows {
		return fmt.Errorf("hrdata: Rows %d: want 0..%d", cfg.Rows, MaxAttritionRows)
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(AttritionColumns); err != nil {
		return fmt.Errorf("hrdata: write header: %w", err)
	}
	if !(cfg.Disparity >= 0 && cfg.Disparity <= 1) {
		return fmt.Errorf("hrdata: Disparity %v: want 0..1", cfg.Disparity)
	}
	g := newGenerator(cfg.Seed)
	if cfg.Disparity > 0 {
		g.disparity = cfg.Disparity
		g.proxy = rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5851f42d4c957f2d))
	}
	for i := 0; i < cfg.Rows; i++ {
		e, _ := g.next()
		if err := cw.Write(e.record()); err != nil {
			return fmt.Errorf("hrdata: write row %d: %w", i+1, err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("hrdata: write: %w", err)
	}
	return nil
}

// generator draws employees from one PCG stream.
type generator struct {
	rng *rand.Rand
	// disparity and proxy (its own stream) give women overtime more often.
	disparity float64
	proxy     *rand.Rand
}

func newGenerator(seed int64) *generator {
	return &generator{rng: rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))}
}

func (g *generator) uniform() float64 { return g.rng.Float64() }

// intn returns an int in [0, n).
func (g *generator) intn(n int) int { return min(int(g.uniform()*float64(n)), n-1) }

// between returns an int in [lo, hi].
func (g *generator) between(lo, hi int) int { return lo + g.intn(hi-lo+1) }

// normal draws a standard normal variate (Box–Muller, one of the pair).
func (g *generator) normal() float64 {
	u1 := 1 - g.uniform() // (0, 1]
	u2 := g.uniform()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// pick returns an index drawn with the given (not necessarily normalised) weights.
func (g *generator) pick(weights ...float64) int {
	var sum float64
	for _, w := range weights {
		sum += w
	}
	u := g.uniform() * sum
	for i, w := range weights {
		if u < w {
			return i
		}
		u -= w
	}
	return len(weights) - 1
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }

var (
	travelValues = []string{"Non-Travel", "Travel_Rarely", "Travel_Frequently"}
	maritalVals  = []string{"Single", "Married", "Divorced"}
	// incomeByLevel is the median MonthlyIncome of each JobLevel (1..5).
	incomeByLevel = [6]float64{0, 2800, 5400, 9800, 15300, 19100}
)

// next draws one employee and returns it with its attrition logit.
func (g *generator) next() (employee, float64) {
	var e employee

	e.Age = clampInt(int(math.Round(37+9*g.normal())), 18, 60)
	e.Gender = []string{"Male", "Female"}[g.pick(60, 40)]
	if e.Age < 25 {
		e.MaritalStatus = maritalVals[g.pick(70, 25, 5)]
	} else {
		e.MaritalStatus = maritalVals[g.pick(30, 47, 23)]
	}

	// Career length: a share of the years since 18, never more.
	maxYears := e.Age - 18
	e.TotalWorkingYears = clampInt(int(float64(maxYears)*(0.3+0.65*g.uniform())), 0, maxYears)
	twy := e.TotalWorkingYears

	// Job level follows experience, with noise.
	e.JobLevel = clampInt(1+int(math.Floor(0.25+float64(twy)/9+0.75*g.normal())), 1, 5)
	if e.JobLevel > 1 && twy < 2*(e.JobLevel-1) {
		e.JobLevel = clampInt(1+twy/2, 1, 5)
	}

	e.Department = []string{"Research & Development", "Sales", "Human Resources"}[g.pick(65, 30, 5)]
	e.JobRole = g.jobRole(e.Department, e.JobLevel)
	e.EducationField = g.educationField(e.Department)
	e.Education = 1 + g.pick(12, 19, 39, 27, 3)

	income := incomeByLevel[e.JobLevel] * math.Exp(0.15*g.normal())
	switch e.JobRole {
	case "Manager", "Research Director":
		income *= 1.08
	case "Laboratory Technician", "Sales Representative":
		income *= 0.9
	}
	e.MonthlyIncome = clampInt(int(math.Round(income)), 1009, 19999)

	// Employers so far; zero means this is the first.
	switch {
	case twy == 0:
		e.NumCompaniesWorked = g.pick(70, 30)
	default:
		e.NumCompaniesWorked = clampInt(int(math.Round(float64(twy)/5*g.uniform()*2.2+g.normal())), 0, 9)
	}
	switch {
	case e.NumCompaniesWorked <= 1 && g.uniform() < 0.6:
		e.YearsAtCompany = twy
	default:
		e.YearsAtCompany = clampInt(int(math.Round(float64(twy)*(0.1+0.8*g.uniform()))), 0, twy)
	}
	yac := e.YearsAtCompany
	e.YearsInCurrentRole = clampInt(int(math.Round(float64(yac)*(0.2+0.8*g.uniform()))), 0, yac)
	e.YearsSinceLastPromotion = clampInt(int(math.Round(float64(yac)*0.6*g.uniform()*g.uniform()*2)), 0, yac)
	e.YearsWithCurrManager = clampInt(e.YearsInCurrentRole+g.between(-2, 2), 0, yac)

	e.BusinessTravel = travelValues[g.pick(10, 71, 19)]
	e.DistanceFromHome = clampInt(1+int(-7.5*math.Log(1-g.uniform())), 1, 29)
	e.EnvironmentSatisfaction = 1 + g.pick(19, 19, 31, 31)
	e.JobSatisfaction = 1 + g.pick(19, 19, 30, 32)
	e.RelationshipSatisfaction = 1 + g.pick(19, 21, 31, 29)
	e.JobInvolvement = 1 + g.pick(6, 26, 59, 9)
	e.WorkLifeBalance = 1 + g.pick(5, 23, 61, 11)
	e.OverTime = g.uniform() < 0.28
	e.TrainingTimesLastYear = g.pick(4, 5, 37, 33, 8, 9, 4)

	// A salary hike of 20% or more comes with an "Outstanding" (4) rating.
	if g.uniform() < 0.15 {
		e.PerformanceRating = 4
		e.PercentSalaryHike = g.between(20, 25)
	} else {
		e.PerformanceRating = 3
		e.PercentSalaryHike = 11 + g.pick(14, 14, 13, 13, 7, 6, 6, 5, 5)
	}

	// As in the IBM table, single employees hold no stock options.
	if e.MaritalStatus == "Single" {
		e.StockOptionLevel = 0
	} else {
		e.StockOptionLevel = g.pick(30, 48, 14, 8)
	}

	if g.proxy != nil && e.Gender == "Female" && !e.OverTime && g.proxy.Float64() < g.disparity {
		e.OverTime = true
	}

	logit := attritionLogit(&e)
	e.Attrition = g.uniform() < sigmoid(logit)
	return e, logit
}

// jobRole picks a role of the department that fits the job level.
func (g *generator) jobRole(dept string, level int) string {
	switch dept {
	case "Sales":
		switch {
		case level == 1:
			return []string{"Sales Representative", "Sales Executive"}[g.pick(65, 35)]
		case level <= 3:
			return []string{"Sales Executive", "Sales Representative"}[g.pick(92, 8)]
		default:
			return []string{"Manager", "Sales Executive"}[g.pick(75, 25)]
		}
	case "Human Resources":
		if level <= 3 {
			return "Human Resources"
		}
		return "Manager"
	default: // Research & Development
		switch {
		case level == 1:
			return []string{"Laboratory Technician", "Research Scientist"}[g.pick(50, 50)]
		case level == 2:
			return []string{"Research Scientist", "Laboratory Technician", "Healthcare Representative", "Manufacturing Director"}[g.pick(30, 20, 25, 25)]
		case level == 3:
			return []string{"Healthcare Representative", "Manufacturing Director", "Research Director"}[g.pick(40, 40, 20)]
		default:
			return []string{"Research Director", "Manager"}[g.pick(55, 45)]
		}
	}
}

// educationField picks a field of study that fits the department.
func (g *generator) educationField(dept string) string {
	switch dept {
	case "Sales":
		return []string{"Marketing", "Life Sciences", "Medical", "Technical Degree", "Other"}[g.pick(36, 30, 22, 7, 5)]
	case "Human Resources":
		return []string{"Human Resources", "Life Sciences", "Medical", "Technical Degree", "Other"}[g.pick(45, 25, 20, 5, 5)]
	default:
		return []string{"Life Sciences", "Medical", "Technical Degree", "Other"}[g.pick(46, 36, 11, 7)]
	}
}

// attritionLogit is the documented attrition model (see the package comment).
func attritionLogit(e *employee) float64 {
	l := AttritionIntercept
	if e.OverTime {
		l += 1.5
	}
	if e.MaritalStatus == "Single" {
		l += 0.9
	}
	if e.StockOptionLevel == 0 {
		l += 0.7
	}
	switch e.BusinessTravel {
	case "Travel_Frequently":
		l += 0.8
	case "Travel_Rarely":
		l += 0.3
	}
	if e.JobRole == "Sales Representative" {
		l += 0.9
	}
	l += 0.45 * float64(4-e.EnvironmentSatisfaction)
	l += 0.45 * float64(4-e.JobSatisfaction)
	l += 0.5 * float64(4-e.JobInvolvement)
	l += 0.5 * float64(4-e.WorkLifeBalance)
	l += 0.05 * float64(e.DistanceFromHome-1)
	l += 0.15 * float64(e.NumCompaniesWorked)
	l += 0.35 * float64(3-min(e.YearsWithCurrManager, 3))
	l += 0.05 * float64(max(0, 35-e.Age))
	l -= 0.35 * float64(e.JobLevel-1)
	l -= 0.9 * math.Log(float64(e.MonthlyIncome)/5000)
	return l
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
