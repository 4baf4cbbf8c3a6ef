package cpupeak

import (
	"os"
	"strings"
	"testing"
	"time"
)

const zen4 = `processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC
cpu MHz		: 2596.132
flags		: fpu sse sse2 fma avx avx2 avx512f avx512dq avx512bw avx512vl

processor	: 1
vendor_id	: AuthenticAMD
cpu family	: 25
cpu MHz		: 9999
`

// TestParse checks the derivation for the CPUs it distinguishes, and that bad input
// is refused naming the field.
func TestParse(t *testing.T) {
	for _, c := range []struct {
		name, info string
		flops      float64 // per cycle
		gflops     float64
	}{
		// Zen 4: 2 pipes x 8 lanes x 2 = 32 FLOP/cycle at 2596.132 MHz.
		{"zen4", zen4, 32, 32 * 2.596132},
		{"zen5", strings.Replace(zen4, "cpu family	: 25", "cpu family	: 26", 1), 64, 64 * 2.596132},
		{"intel avx512", strings.Replace(zen4, "AuthenticAMD", "GenuineIntel", 1), 64, 64 * 2.596132},
		{"avx2", strings.Replace(zen4, " avx512f", "", 1), 32, 32 * 2.596132},
		{"zen1", strings.NewReplacer(" avx512f", "", "cpu family	: 25", "cpu family	: 23", "model		: 17", "model		: 1").Replace(zen4), 16, 16 * 2.596132},
		{"sse", strings.NewReplacer(" avx512f", "", " avx2", "").Replace(zen4), 8, 8 * 2.596132},
	} {
		p, err := Parse(c.info)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.FLOPsPerCycle != c.flops || p.GFLOPS-c.gflops > 1e-9 || c.gflops-p.GFLOPS > 1e-9 {
			t.Errorf("%s: %v FLOP/cycle, %v GFLOP/s; want %v, %v", c.name, p.FLOPsPerCycle, p.GFLOPS, c.flops, c.gflops)
		}
	}
	for _, c := range []struct{ info, field string }{
		{strings.Replace(zen4, "2596.132", "fast", 1), "cpu MHz"},
		{strings.Replace(zen4, "2596.132", "-1", 1), "cpu MHz"},
		{strings.Replace(zen4, "cpu MHz		: 2596.132\n", "", 1), "cpu MHz"},
		{strings.Replace(zen4, ": 25\nmodel", ": x\nmodel", 1), "cpu family"},
		{"processor : 0\ncpu MHz : 1000\n", "flags"},
	} {
		if _, err := Parse(c.info); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("Parse(%.40q...) = %v, want an error naming %s", c.info, err, c.field)
		}
	}
}

// TestDetect parses this machine's cpuinfo where there is one.
func TestDetect(t *testing.T) {
	if _, err := os.Stat("/proc/cpuinfo"); err != nil {
		t.Skip("no /proc/cpuinfo here")
	}
	p, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	if p.GFLOPS <= 0 {
		t.Fatalf("peak %v", p)
	}
	t.Log(p)
}

// FuzzParse checks that no cpuinfo text panics Parse and that an accepted one gives a
// positive peak.
func FuzzParse(f *testing.F) {
	f.Add(zen4)
	f.Add("flags : avx2 fma\ncpu MHz : 3000\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err == nil && !(p.GFLOPS > 0) {
			t.Fatalf("accepted %q with peak %v", s, p.GFLOPS)
		}
	})
}

// TestMeasure checks that the FMA loop reaches a plausible rate: above a tenth of the
// nominal peak (anything less means the loop or the timing is broken) and at most
// twice the nominal peak (a clock boost above twice the base clock does not exist).
func TestMeasure(t *testing.T) {
	p, err := Detect()
	if err != nil {
		t.Skipf("no cpuinfo to compare with: %v", err)
	}
	if loop, _ := fmaLoop(); loop == nil {
		t.Skip("no vector FMA here")
	}
	g, err := Measure(100 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("measured %.1f GFLOP/s per core, nominal %.1f", g, p.GFLOPS)
	if g < p.GFLOPS/10 || g > 2*p.GFLOPS {
		t.Errorf("measured %.1f GFLOP/s, nominal peak %.1f", g, p.GFLOPS)
	}
}
