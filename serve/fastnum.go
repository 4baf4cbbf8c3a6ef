package serve

import (
	"math"
	"sync"
)

// fastNumbers decodes the JSON data of a numeric tensor of len(dst) elements in one
// pass: it checks the array's structure (nesting at most MaxTensorRank deep, exactly
// len(dst) leaves) and parses each number as it goes, the common decimal forms by hand
// (parseDecimal) and any other through parseNumber. It reports false, dst partly
// written, for anything it does not take: a malformed array, a bad element, a count
// other than len(dst). The caller then decodes with walkArray and parseNumber, the
// reference, whose answer and error message stand; what fastNumbers takes, the
// reference takes and reads the same, bit for bit (FuzzDecodeRequest checks).
func fastNumbers(b []byte, dst []float64, datatype string) bool {
	var kind int
	switch datatype {
	case TypeFP64:
		kind = numFP64
	case TypeUINT8:
		kind = numUINT8
	case TypeINT64:
		kind = numINT64
	case TypeINT32:
		kind = numINT32
	default:
		kind = numOther
	}
	i, n, depth := 0, 0, 0
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '[' {
		return false
	}
	for {
		// At the start of a value: a nested array or a number.
		if b[i] == '[' {
			depth++
			if depth > MaxTensorRank {
				return false
			}
			i = skipSpace(b, i+1)
			if i >= len(b) {
				return false
			}
			if b[i] != ']' {
				continue
			}
			// An empty array is a whole value.
		} else {
			if n >= len(dst) {
				return false
			}
			start := i
			if kind == numUINT8 {
				// A pixel: one to three digits, at most 255.
				if d := b[i] - '0'; d <= 9 {
					v, j := uint(d), i+1
					if d != 0 {
						for j < len(b) && j < i+3 && b[j]-'0' <= 9 {
							v = v*10 + uint(b[j]-'0')
							j++
						}
					}
					if v <= math.MaxUint8 && (j == len(b) || !numberByte[b[j]]) {
						dst[n] = float64(v)
						n++
						if i = skipSpace(b, j); i >= len(b) {
							return false
						}
						goto next
					}
				}
			}
			if kind == numFP64 {
				// A short decimal (at most 15 digits, no exponent): its digits make an
				// integer below 2^53 and one division by an exact power of ten
				// rounds it correctly, as scanDecimal does.
				j, neg := i, b[i] == '-'
				if neg {
					j++
				}
				var mant uint64
				digits, frac := 0, 0
				if j < len(b) && b[j]-'1' <= 8 {
					for j < len(b) && b[j]-'0' <= 9 {
						mant = mant*10 + uint64(b[j]-'0')
						digits++
						j++
					}
				} else if j < len(b) && b[j] == '0' {
					j++
				} else {
					digits = 99
				}
				if j < len(b) && b[j] == '.' {
					j++
					for j < len(b) && b[j]-'0' <= 9 {
						mant = mant*10 + uint64(b[j]-'0')
						digits++
						frac++
						j++
					}
					if frac == 0 {
						digits = 99
					}
				}
				if digits <= 15 && (j == len(b) || !numberByte[b[j]]) {
					f := float64(mant)
					if neg {
						f = -f
					}
					if frac > 0 {
						f /= pow10[frac]
					}
					dst[n] = f
					n++
					if i = skipSpace(b, j); i >= len(b) {
						return false
					}
					goto next
				}
			}
			v, end, ok := scanDecimal(b, i, kind)
			if ok && (end == len(b) || !numberByte[b[end]]) {
				i = end
			} else {
				// Another form: the token as walkArray cuts it, through parseNumber.
				for i < len(b) && numberByte[b[i]] {
					i++
				}
				if i == start {
					return false
				}
				var err error
				if v, err = parseNumber(b[start:i], datatype); err != nil {
					return false
				}
			}
			dst[n] = v
			n++
			i = skipSpace(b, i)
			if i >= len(b) {
				return false
			}
		}
	next:
		// After a value: a comma and the next, or the ends of arrays.
		for b[i] == ']' {
			depth--
			i = skipSpace(b, i+1)
			if depth == 0 {
				return i == len(b) && n == len(dst)
			}
			if i >= len(b) {
				return false
			}
		}
		if b[i] != ',' {
			return false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return false
		}
	}
}

const (
	numOther = iota
	numFP64
	numUINT8
	numINT64
	numINT32
)

// numberByte marks the bytes a JSON number is made of.
var numberByte = func() (t [256]bool) {
	for _, c := range []byte("0123456789+-.eE") {
		t[c] = true
	}
	return t
}()

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// pow10 holds the powers of ten a float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseDecimal reads a number token of the kind's common forms: for FP64, JSON
// numbers whose digits (at most 19) make an integer below 2^53 and whose decimal
// exponent is within ±22, which one IEEE multiplication or division of two exact
// values rounds correctly, so the result is strconv.ParseFloat's, bit for bit; for the
// integer kinds, JSON integers within the type's range (at most 18 digits). It reports
// false for anything else (the caller uses parseNumber): another form, a token outside
// JSON's grammar, a datatype it does not handle.
func parseDecimal(s []byte, kind int) (float64, bool) {
	v, end, ok := scanDecimal(s, 0, kind)
	return v, ok && end == len(s)
}

// scanDecimal reads the longest number in parseDecimal's forms at s[i:] and returns
// its value and end; the caller checks what follows.
func scanDecimal(s []byte, i, kind int) (float64, int, bool) {
	if kind == numOther || i >= len(s) {
		return 0, i, false
	}
	neg := s[i] == '-'
	if neg {
		i++
	}
	var mant uint64
	digits := 0
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			mant = mant*10 + uint64(s[i]-'0')
			digits++
			i++
			if digits > 18 {
				return 0, i, false
			}
		}
	default:
		return 0, i, false
	}
	if kind != numFP64 {
		switch kind {
		case numUINT8:
			if neg || mant > math.MaxUint8 {
				return 0, i, false
			}
		case numINT32:
			if mant > math.MaxInt32 {
				return 0, i, false
			}
		}
		v := int64(mant)
		if neg {
			v = -v
		}
		return float64(v), i, true
	}
	exp := 0
	if i < len(s) && s[i] == '.' {
		i++
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if mant == 0 && s[i] == '0' {
				// Leading zeros of the fraction add no digit.
			} else {
				mant = mant*10 + uint64(s[i]-'0')
				digits++
				if digits > 19 {
					return 0, i, false
				}
			}
			exp--
			i++
		}
		if i == j {
			return 0, i, false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		j := i
		e := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if e < 1000 {
				e = e*10 + int(s[i]-'0')
			}
			i++
		}
		if i == j {
			return 0, i, false
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if mant >= 1<<53 {
		return 0, i, false
	}
	f := float64(mant)
	if neg {
		f = -f
	}
	switch {
	case mant == 0 || exp == 0:
		return f, i, true
	case exp > 0 && exp <= 22:
		return f * pow10[exp], i, true
	case exp < 0 && exp >= -22:
		return f / pow10[-exp], i, true
	}
	return 0, i, false
}

// floatBuffers pools the numbers of decoded tensors (*[]float64): a large request's
// tensors are megabytes, which would otherwise be allocated, cleared and collected per
// request.
var floatBuffers sync.Pool

// getFloats returns a slice of n numbers, not cleared: the decoders write all of them
// or fail.
func getFloats(n int) []float64 {
	if n >= 1024 {
		if bp, _ := floatBuffers.Get().(*[]float64); bp != nil {
			if cap(*bp) >= n {
				return (*bp)[:n]
			}
			floatBuffers.Put(bp)
		}
	}
	return make([]float64, n)
}

// putFloats hands a tensor's numbers back to getFloats once nothing refers to them.
func putFloats(v []float64) {
	if cap(v) >= 1024 {
		floatBuffers.Put(&v)
	}
}
