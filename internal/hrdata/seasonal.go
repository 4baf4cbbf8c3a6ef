package hrdata

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// SeasonalColumns are the CSV header columns of GenerateSeasonal, in order.
var SeasonalColumns = []string{"Month", "Headcount"}

// SeasonalConfig configures GenerateSeasonal.
type SeasonalConfig struct {
	// Months is the number of monthly rows, 24..MaxPerformanceMonths (default 144).
	Months int
	// Seed selects the pseudo-random stream; equal configurations give identical output.
	Seed int64
}

// DefaultSeasonalConfig returns 144 months (2013-01 to 2024-12), seed 7: the
// configuration of jobs/data/hiring-seasonal.csv.
func DefaultSeasonalConfig() SeasonalConfig { return SeasonalConfig{Months: 144, Seed: 7} }

// GenerateSeasonal writes one monthly series as CSV (header SeasonalColumns, months
// from 2013-01): a company's hires per month, with a strong yearly season and a trend,
//
//	y_t = 200 + 1.5·t + 60·sin(2π·m/12) + 25·cos(4π·m/12) + e_t,  e_t = 0.5·e_{t-1} + N(0, 8²)
//
// where t counts months from 0 and m = t mod 12 is the month of the year. The trend
// (18 a year) makes the seasonal-naive forecast y_{t-12} biased low by about 18, and
// the autocorrelated noise is partly predictable from the last months: a model of the
// residual over seasonal naive can beat it.
func GenerateSeasonal(w io.Writer, cfg SeasonalConfig) error {
	if cfg.Months == 0 {
		cfg.Months = DefaultSeasonalConfig().Months
	}
	if cfg.Months < 24 || cfg.Months > MaxPerformanceMonths {
		return fmt.Errorf("hrdata: months %d not in 24..%d", cfg.Months, MaxPerformanceMonths)
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5ea5))
	cw := csv.NewWriter(w)
	if err := cw.Write(SeasonalColumns); err != nil {
		return err
	}
	start := time.Date(2013, 1, 1, 0, 0, 0, 0, time.UTC)
	var e float64
	for t := range cfg.Months {
		m := float64(t % 12)
		e = 0.5*e + 8*rng.NormFloat64()
		y := 200 + 1.5*float64(t) + 60*math.Sin(2*math.Pi*m/12) + 25*math.Cos(4*math.Pi*m/12) + e
		month := start.AddDate(0, t, 0).Format("2006-01")
		if err := cw.Write([]string{month, strconv.FormatFloat(math.Round(y*10)/10, 'f', -1, 64)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
