// Package cpupeak derives a CPU core's peak float32 throughput from /proc/cpuinfo: the
// widest vector FMA the core runs, how many FMA pipes it has and its clock. The figure
// anchors benchmark results ("GFLOP/s per core against the core's peak") on machines
// where no reference implementation is trustworthy.
package cpupeak

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Peak is one core's float32 peak and what it was derived from.
type Peak struct {
	// Vendor, Family, Model and ModelName are cpuinfo's vendor_id, cpu family, model and
	// model name.
	Vendor    string `json:"vendor"`
	Family    int    `json:"family"`
	Model     int    `json:"model"`
	ModelName string `json:"model_name"`
	// VectorBits is the widest vector instruction set (512 with AVX-512F, 256 with AVX2,
	// 128 otherwise); FMABits is the width of one FMA pipe (Zen 4 runs a 512-bit FMA as
	// two 256-bit halves); FMAPipes the FMA pipes per core.
	VectorBits int `json:"vector_bits"`
	FMABits    int `json:"fma_bits"`
	FMAPipes   int `json:"fma_pipes"`
	// MHz is cpuinfo's clock (under a hypervisor, usually the base clock: the core may
	// run faster while boosting).
	MHz float64 `json:"mhz"`
	// FLOPsPerCycle is FMAPipes · FMABits/32 lanes · 2 (a multiply and an add).
	FLOPsPerCycle float64 `json:"flops_per_cycle"`
	// GFLOPS is FLOPsPerCycle · MHz / 1000.
	GFLOPS float64 `json:"gflops"`
}

// String describes the peak and its derivation in one line.
func (p Peak) String() string {
	return fmt.Sprintf("%s (%s family %d model %d): %d-bit vectors, %d FMA pipes of %d bits, %.0f FLOP/cycle x %.0f MHz = %.1f GFLOP/s per core (float32)",
		p.ModelName, p.Vendor, p.Family, p.Model, p.VectorBits, p.FMAPipes, p.FMABits, p.FLOPsPerCycle, p.MHz, p.GFLOPS)
}

// Detect reads /proc/cpuinfo.
func Detect() (Peak, error) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return Peak{}, fmt.Errorf("cpupeak: %w", err)
	}
	return Parse(string(b))
}

// Parse derives the peak from the first processor of a /proc/cpuinfo text.
func Parse(cpuinfo string) (Peak, error) {
	var p Peak
	var flags map[string]bool
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			if len(seen) > 0 {
				break // the first processor's block is enough
			}
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if seen[key] {
			continue
		}
		seen[key] = true
		var err error
		switch key {
		case "vendor_id":
			p.Vendor = val
		case "cpu family":
			if p.Family, err = strconv.Atoi(val); err != nil {
				return Peak{}, fmt.Errorf("cpupeak: cpu family: %q is not an integer", val)
			}
		case "model":
			if p.Model, err = strconv.Atoi(val); err != nil {
				return Peak{}, fmt.Errorf("cpupeak: model: %q is not an integer", val)
			}
		case "model name":
			p.ModelName = val
		case "cpu MHz":
			if p.MHz, err = strconv.ParseFloat(val, 64); err != nil || !(p.MHz > 0 && p.MHz < 1e5) {
				return Peak{}, fmt.Errorf("cpupeak: cpu MHz: %q is not a clock in (0, 100000)", val)
			}
		case "flags":
			flags = map[string]bool{}
			for _, f := range strings.Fields(val) {
				flags[f] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Peak{}, fmt.Errorf("cpupeak: %w", err)
	}
	switch {
	case flags == nil:
		return Peak{}, errors.New("cpupeak: flags: missing (not an x86 /proc/cpuinfo?)")
	case p.MHz == 0:
		return Peak{}, errors.New("cpupeak: cpu MHz: missing")
	}
	amd := p.Vendor == "AuthenticAMD"
	switch {
	case flags["avx512f"]:
		p.VectorBits, p.FMAPipes, p.FMABits = 512, 2, 512
		if amd && p.Family < 26 { // Zen 4: two 256-bit FMA pipes, 512-bit ops in two halves
			p.FMABits = 256
		}
	case flags["avx2"] && flags["fma"]:
		p.VectorBits, p.FMAPipes, p.FMABits = 256, 2, 256
		if amd && p.Family == 23 && p.Model < 0x30 { // Zen 1: 128-bit FMA pipes
			p.FMABits = 128
		}
	default: // SSE: one 128-bit multiply and one add per cycle
		p.VectorBits, p.FMAPipes, p.FMABits = 128, 1, 128
	}
	p.FLOPsPerCycle = float64(p.FMAPipes*p.FMABits/32) * 2
	p.GFLOPS = p.FLOPsPerCycle * p.MHz / 1000
	return p, nil
}
