package jobs

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
)

// decimalRE is a non-negative decimal without exponent: "1", "0.5", "1.25".
var decimalRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// ParseCPU reads a CPU amount in the Kubernetes style and returns millicores: whole or
// fractional cores ("1", "2", "1.5", "0.25") or millicores ("500m"). Negative numbers,
// exponents, amounts finer than one millicore and amounts that overflow int64 are errors.
// "0" parses as 0; whether zero is allowed is the caller's decision.
func ParseCPU(s string) (millis int64, err error) {
	num, scale := s, int64(1000)
	if strings.HasSuffix(s, "m") {
		num, scale = strings.TrimSuffix(s, "m"), 1
	}
	v, err := scaleDecimal(num, scale)
	if err != nil {
		return 0, fmt.Errorf("invalid CPU amount %q: %w (want cores such as \"2\" or \"1.5\", or millicores such as \"500m\")", s, err)
	}
	return v, nil
}

// memoryUnits maps a memory suffix to its multiplier in bytes.
var memoryUnits = map[string]int64{
	"":   1,
	"k":  1e3,
	"K":  1e3,
	"M":  1e6,
	"G":  1e9,
	"T":  1e12,
	"P":  1e15,
	"E":  1e18,
	"Ki": 1 << 10,
	"Mi": 1 << 20,
	"Gi": 1 << 30,
	"Ti": 1 << 40,
	"Pi": 1 << 50,
	"Ei": 1 << 60,
}

// ParseMemory reads a memory amount in the Kubernetes style and returns bytes: a plain number
// of bytes ("1000"), or a number with a decimal (k/K, M, G, T, P, E) or binary (Ki, Mi, Gi,
// Ti, Pi, Ei) suffix ("1G", "512Mi", "1.5Gi"). Negative numbers, exponents, unknown suffixes,
// fractions of a byte and amounts that overflow int64 are errors. "0" parses as 0.
func ParseMemory(s string) (bytes int64, err error) {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], s[i:]
	}
	mult, ok := memoryUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid memory amount %q: unknown unit %q (want one of k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or none for bytes)", s, unit)
	}
	v, err := scaleDecimal(num, mult)
	if err != nil {
		return 0, fmt.Errorf("invalid memory amount %q: %w", s, err)
	}
	return v, nil
}

// scaleDecimal returns the non-negative decimal num times mult, which must be a whole number
// that fits in an int64.
func scaleDecimal(num string, mult int64) (int64, error) {
	if num == "" {
		return 0, fmt.Errorf("missing number")
	}
	if !decimalRE.MatchString(num) {
		return 0, fmt.Errorf("%q is not a non-negative decimal number", num)
	}
	if len(num) > 40 {
		return 0, fmt.Errorf("too many digits")
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%q is not a number", num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("too fine-grained (must be a whole number of the base unit)")
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, fmt.Errorf("too large")
	}
	return n.Int64(), nil
}
