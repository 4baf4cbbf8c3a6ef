package paramserver

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func leBytes(vals ...float32) []byte {
	b := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestFloat32BytesIsLittleEndian(t *testing.T) {
	vals := []float32{1, -2.5, float32(math.Inf(1)), 3e-38}
	var scratch []byte
	if got, want := float32Bytes(vals, &scratch), leBytes(vals...); string(got) != string(want) {
		t.Fatalf("float32Bytes = %x, want %x", got, want)
	}
	dst := make([]float32, 4)
	putFloat32s(dst, leBytes(vals...))
	for i := range vals {
		if dst[i] != vals[i] {
			t.Fatalf("putFloat32s = %v, want %v", dst, vals)
		}
	}
}

func TestAssembler(t *testing.T) {
	type chunk struct {
		off  uint64
		data []byte
	}
	tests := []struct {
		name    string
		n       int
		chunks  []chunk
		wantErr bool // from add or done
	}{
		{"whole", 3, []chunk{{0, leBytes(1, 2, 3)}}, false},
		{"two chunks", 3, []chunk{{0, leBytes(1, 2)}, {2, leBytes(3)}}, false},
		{"empty range", 0, nil, false},
		{"missing tail", 3, []chunk{{0, leBytes(1, 2)}}, true},
		{"gap", 3, []chunk{{0, leBytes(1)}, {2, leBytes(3)}}, true},
		{"overlap", 3, []chunk{{0, leBytes(1, 2)}, {1, leBytes(2, 3)}}, true},
		{"overflow", 2, []chunk{{0, leBytes(1, 2, 3)}}, true},
		{"ragged bytes", 2, []chunk{{0, []byte{1, 2, 3}}}, true},
		{"huge offset", 2, []chunk{{math.MaxUint64, leBytes(1)}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := assembler{dst: make([]float32, tc.n)}
			var err error
			for _, c := range tc.chunks {
				if err = a.add(c.off, c.data); err != nil {
					break
				}
			}
			if err == nil {
				err = a.done()
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if !tc.wantErr && tc.n == 3 && (a.dst[0] != 1 || a.dst[2] != 3) {
				t.Fatalf("dst = %v", a.dst)
			}
		})
	}
}

// FuzzAssembler feeds arbitrary chunk sequences (outside input) to the decoder: it must
// never panic, and success must mean every value was written exactly once in order.
func FuzzAssembler(f *testing.F) {
	f.Add(uint8(3), uint64(0), leBytes(1, 2), uint64(2), leBytes(3))
	f.Add(uint8(2), uint64(1), []byte{1, 2, 3}, uint64(0), []byte{})
	f.Add(uint8(0), uint64(math.MaxUint64), leBytes(1), uint64(0), []byte(nil))
	f.Fuzz(func(t *testing.T, n uint8, off1 uint64, d1 []byte, off2 uint64, d2 []byte) {
		a := assembler{dst: make([]float32, n)}
		err := a.add(off1, d1)
		if err == nil {
			err = a.add(off2, d2)
		}
		if err == nil {
			err = a.done()
		}
		if err == nil {
			if len(d1)+len(d2) != 4*int(n) || off1 != 0 || off2 != uint64(len(d1)/4) {
				t.Fatalf("accepted n=%d off1=%d len1=%d off2=%d len2=%d", n, off1, len(d1), off2, len(d2))
			}
			all := append(append([]byte(nil), d1...), d2...)
			var scratch []byte
			if string(float32Bytes(a.dst, &scratch)) != string(all) {
				t.Fatal("decoded values differ from input bytes")
			}
		}
	})
}
