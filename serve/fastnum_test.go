package serve

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// referenceNumbers decodes numeric tensor data as decodeTensor did before fastNumbers:
// walkArray and parseNumber.
func referenceNumbers(b []byte, n int, datatype string) ([]float64, bool) {
	out := make([]float64, n)
	count, err := walkArray(b, n, func(i int, raw []byte) error {
		v, err := parseNumber(raw, datatype)
		out[i] = v
		return err
	})
	return out, err == nil && count == n
}

// checkFastNumbers fails when fastNumbers takes data the reference refuses or reads
// any element differently, bit for bit.
func checkFastNumbers(t *testing.T, b []byte, n int, datatype string) (fastOK bool) {
	t.Helper()
	fast := make([]float64, n)
	if !fastNumbers(b, fast, datatype) {
		return false
	}
	ref, ok := referenceNumbers(b, n, datatype)
	if !ok {
		t.Fatalf("%s %q (%d elements): fastNumbers took what the reference refuses", datatype, b, n)
	}
	for i := range ref {
		if math.Float64bits(fast[i]) != math.Float64bits(ref[i]) {
			t.Fatalf("%s %q element %d: fastNumbers %v (%#x), reference %v (%#x)", datatype, b, i, fast[i], math.Float64bits(fast[i]), ref[i], math.Float64bits(ref[i]))
		}
	}
	return true
}

var fuzzDatatypes = []string{TypeFP64, TypeFP32, TypeUINT8, TypeINT32, TypeINT64}

// FuzzFastNumbers checks the one-pass numeric data decoder against the reference
// (walkArray and parseNumber) on any bytes, for each numeric datatype.
func FuzzFastNumbers(f *testing.F) {
	for _, s := range []string{`[1,2.5,-3e2]`, `[[0, 255],[3 ,4]]`, `[ -0.0 , 1E-22, 9007199254740993, 0.1]`, `[[[]],[1]]`, `[1,]`,
		`[123456789012345678901, 1.0000000000000000000001]`, `[01]`, `[1e400]`, `[-0]`, `[2147483648,-2147483648]`, `[0e99999]`, "[\n1\t]\r", `[256,2555,00,007,1.0]`} {
		for k := range fuzzDatatypes {
			f.Add([]byte(s), uint8(k), uint8(3))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, k, n uint8) {
		checkFastNumbers(t, b, int(n%16), fuzzDatatypes[int(k)%len(fuzzDatatypes)])
	})
}

// TestFastNumbersDecimals compares the hand-rolled decimal parser with strconv, bit for
// bit, on a million random numbers in the forms JSON encoders write (shortest
// round-trip floats of many magnitudes, fixed decimals, integers, exponents), and
// checks that it takes the common forms itself.
func TestFastNumbersDecimals(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	taken := 0
	const count = 1 << 20
	for i := range count {
		var s string
		switch i % 6 {
		case 0:
			s = strconv.FormatFloat(rng.NormFloat64()*math.Pow(10, float64(rng.IntN(40)-20)), 'g', -1, 64)
		case 1:
			s = strconv.FormatFloat(rng.NormFloat64()*1000, 'f', rng.IntN(6), 64)
		case 2:
			s = strconv.Itoa(rng.IntN(1<<20) - 1<<19)
		case 3:
			s = strconv.FormatFloat(float64(rng.Float32())*100, 'g', -1, 32)
		case 4:
			s = strconv.FormatFloat(rng.Float64(), 'e', rng.IntN(20), 64)
		default:
			s = strconv.FormatUint(rng.Uint64()>>rng.IntN(64), 10) + "." + strconv.FormatUint(rng.Uint64()>>rng.IntN(64), 10)
		}
		want, err := strconv.ParseFloat(s, 64)
		got, ok := parseDecimal([]byte(s), numFP64)
		if ok {
			taken++
			if err != nil || math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("%s: parseDecimal %v, strconv %v (%v)", s, got, want, err)
			}
		}
		fast := checkFastNumbers(t, []byte("["+s+"]"), 1, TypeFP64)
		if (i%6 == 1 || i%6 == 2) && !(ok && fast) {
			t.Fatalf("%s: parseDecimal left a common form to strconv", s)
		}
	}
	if taken < count/2 {
		t.Fatalf("parseDecimal took %d of %d numbers", taken, count)
	}
}

// TestFastNumbersTakesExampleData checks that the requests the example models get
// (decimals from the samples, pixels) take the fast path, in each datatype.
func TestFastNumbersTakesExampleData(t *testing.T) {
	for _, c := range []struct {
		data     string
		n        int
		datatype string
	}{
		{`[[155.45,4.47,3,0,1,3,3.13],[173.91, 8.21, 4, 0, 0, 3, 3.62]]`, 14, TypeFP64},
		{`[[[0,255,17],[3,4,5]]]`, 6, TypeUINT8},
		{`[-5, 7, 2147483647, -2147483648]`, 4, TypeINT32},
		{`[-5, 7, 123456789012]`, 3, TypeINT64},
		{`[1.5, 2, 0.25]`, 3, TypeFP32},
	} {
		if !checkFastNumbers(t, []byte(c.data), c.n, c.datatype) {
			t.Errorf("%s %s: fastNumbers refused", c.datatype, c.data)
		}
		if checkFastNumbers(t, []byte(c.data), c.n+1, c.datatype) {
			t.Errorf("%s %s: fastNumbers took %d elements for %d", c.datatype, c.data, c.n, c.n+1)
		}
	}
}

// TestHasStructural checks the eight-byte test of the envelope's skip against a byte
// loop, on every byte value in every position and on random words.
func TestHasStructural(t *testing.T) {
	ref := func(x uint64) bool {
		for range 8 {
			if c := byte(x); c == '"' || c == '[' || c == ']' || c == '{' || c == '}' {
				return true
			}
			x >>= 8
		}
		return false
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for pos := range 8 {
		for c := range 256 {
			x := uint64(0x3030303030303030) &^ (0xff << (8 * pos)) // '0's around
			x |= uint64(c) << (8 * pos)
			for _, w := range []uint64{x, x | rng.Uint64()&^(0xff<<(8*pos))} {
				if hasStructural(w) != ref(w) {
					t.Fatalf("%#x: hasStructural %v", w, hasStructural(w))
				}
			}
		}
	}
	for range 1 << 20 {
		if w := rng.Uint64(); hasStructural(w) != ref(w) {
			t.Fatalf("%#x: hasStructural %v", w, hasStructural(w))
		}
	}
}
