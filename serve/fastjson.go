package serve

import (
	"encoding/binary"
	"encoding/json"
	"strconv"
)

// fastDecodeEnvelope decodes an inference request's JSON envelope in one pass without
// reflection, leaving each input's data as a slice of body (walked later by
// walkArray). It handles the common form only: exactly-spelled fields, each at most
// once, with values of their types; anything else (a field spelled in another case, a
// null, an escape in a name, invalid JSON) reports false, and the caller decodes the
// body with encoding/json, whose answer (and error message) is the reference. What it
// accepts, encoding/json accepts and decodes the same (FuzzDecodeRequest checks).
func fastDecodeEnvelope(body []byte) (*InferRequest, bool) {
	p := envParser{b: body}
	var req InferRequest
	if !p.object(func(key string) bool {
		switch key {
		case "id":
			s, ok := p.plainString()
			req.ID = s
			return ok
		case "parameters":
			m, ok := p.params()
			req.Parameters = m
			return ok
		case "inputs":
			req.Inputs = []RequestInput{}
			return p.array(func() bool {
				var in RequestInput
				ok := p.object(func(key string) bool {
					switch key {
					case "name":
						s, ok := p.plainString()
						in.Name = s
						return ok
					case "datatype":
						s, ok := p.plainString()
						in.Datatype = s
						return ok
					case "shape":
						in.Shape = []int64{}
						return p.array(func() bool {
							v, ok := p.int64()
							in.Shape = append(in.Shape, v)
							return ok
						})
					case "parameters":
						m, ok := p.params()
						in.Parameters = m
						return ok
					case "data":
						p.space()
						start := p.i
						if !p.skip() || p.i == start {
							return false
						}
						in.Data = json.RawMessage(body[start:p.i])
						return true
					}
					return false
				})
				req.Inputs = append(req.Inputs, in)
				return ok
			})
		case "outputs":
			req.Outputs = []RequestOutput{}
			return p.array(func() bool {
				var out RequestOutput
				ok := p.object(func(key string) bool {
					switch key {
					case "name":
						s, ok := p.plainString()
						out.Name = s
						return ok
					case "parameters":
						m, ok := p.params()
						out.Parameters = m
						return ok
					}
					return false
				})
				req.Outputs = append(req.Outputs, out)
				return ok
			})
		}
		return false
	}) {
		return nil, false
	}
	p.space()
	if p.i != len(p.b) {
		return nil, false
	}
	return &req, true
}

type envParser struct {
	b []byte
	i int
}

func (p *envParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *envParser) peek(c byte) bool {
	p.space()
	return p.i < len(p.b) && p.b[p.i] == c
}

// object parses an object, calling field for each key with p at the value; a key seen
// twice is refused.
func (p *envParser) object(field func(key string) bool) bool {
	if !p.peek('{') {
		return false
	}
	p.i++
	if p.peek('}') {
		p.i++
		return true
	}
	var seen []string
	for {
		key, ok := p.plainString()
		if !ok {
			return false
		}
		for _, k := range seen {
			if k == key {
				return false
			}
		}
		seen = append(seen, key)
		if !p.peek(':') {
			return false
		}
		p.i++
		if !field(key) {
			return false
		}
		p.space()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return true
		default:
			return false
		}
	}
}

// array parses an array, calling elem with p at each element.
func (p *envParser) array(elem func() bool) bool {
	if !p.peek('[') {
		return false
	}
	p.i++
	if p.peek(']') {
		p.i++
		return true
	}
	for {
		p.space()
		if !elem() {
			return false
		}
		p.space()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return true
		default:
			return false
		}
	}
}

// plainString parses a string of printable ASCII without escapes.
func (p *envParser) plainString() (string, bool) {
	if !p.peek('"') {
		return "", false
	}
	start := p.i + 1
	for j := start; j < len(p.b); j++ {
		c := p.b[j]
		switch {
		case c == '"':
			p.i = j + 1
			return string(p.b[start:j]), true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", false
		}
	}
	return "", false
}

// int64 parses an integer in JSON's grammar that fits int64.
func (p *envParser) int64() (int64, bool) {
	p.space()
	start := p.i
	for p.i < len(p.b) && (p.b[p.i] == '-' || p.b[p.i] >= '0' && p.b[p.i] <= '9') {
		p.i++
	}
	tok := p.b[start:p.i]
	if !isJSONNumber(tok) {
		return 0, false
	}
	v, err := strconv.ParseInt(string(tok), 10, 64)
	return v, err == nil
}

// params parses a parameters object: plain keys, values kept raw (checked valid).
func (p *envParser) params() (map[string]json.RawMessage, bool) {
	m := map[string]json.RawMessage{}
	ok := p.object(func(key string) bool {
		p.space()
		start := p.i
		if !p.skip() {
			return false
		}
		v := p.b[start:p.i]
		if !json.Valid(v) {
			return false
		}
		m[key] = json.RawMessage(v)
		return true
	})
	return m, ok
}

// skip moves past one value, tracking nesting and strings only; the value is checked
// later (walkArray and the element parsers for data, json.Valid for parameters).
func (p *envParser) skip() bool {
	p.space()
	depth := 0
	for p.i < len(p.b) {
		if depth > 0 {
			// Inside an array or object only strings and brackets matter: move past
			// numbers, commas and spaces (most of a tensor's data) eight bytes at a
			// time while none of them is structural, then byte by byte.
			for p.i+8 <= len(p.b) && !hasStructural(binary.LittleEndian.Uint64(p.b[p.i:])) {
				p.i += 8
			}
			for p.i < len(p.b) && !structural[p.b[p.i]] {
				p.i++
			}
			if p.i >= len(p.b) {
				break
			}
		}
		c := p.b[p.i]
		switch c {
		case '"':
			p.i++
			for p.i < len(p.b) && p.b[p.i] != '"' {
				if p.b[p.i] == '\\' {
					p.i++
				}
				p.i++
			}
			if p.i >= len(p.b) {
				return false
			}
			p.i++
			if depth == 0 {
				return true
			}
			continue
		case '[', '{':
			depth++
		case ']', '}':
			if depth == 0 {
				return p.i > 0
			}
			depth--
			if depth == 0 {
				p.i++
				return true
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return true
			}
		}
		p.i++
	}
	return depth == 0
}

// structural marks the bytes skip stops at inside an array or object.
var structural = func() (t [256]bool) {
	for _, c := range []byte(`"[]{}`) {
		t[c] = true
	}
	return t
}()

// hasStructural tells whether one of the eight bytes of x is one of `"[]{}`: a byte
// ORed with 0x20 is '{' only for '[' and '{', and '}' only for ']' and '}'.
func hasStructural(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	has := func(x uint64, c byte) uint64 {
		y := x ^ (ones * uint64(c))
		return (y - ones) &^ y & highs // nonzero iff some byte of y is zero
	}
	folded := x | ones*0x20
	return has(x, '"')|has(folded, '{')|has(folded, '}') != 0
}
