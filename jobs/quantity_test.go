package jobs

import (
	"strings"
	"testing"
)

func TestParseCPU(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"1", 1000, ""},
		{"2", 2000, ""},
		{"500m", 500, ""},
		{"1.5", 1500, ""},
		{"0.25", 250, ""},
		{"0.001", 1, ""},
		{"0", 0, ""},
		{"0m", 0, ""},
		{"1000000m", 1000000, ""},
		{"9223372036854775807m", 9223372036854775807, ""},
		{"", 0, "missing number"},
		{"m", 0, "missing number"},
		{"-1", 0, "not a non-negative decimal"},
		{"1e3", 0, "not a non-negative decimal"},
		{"1.", 0, "not a non-negative decimal"},
		{".5", 0, "not a non-negative decimal"},
		{"0.0005", 0, "too fine-grained"},
		{"1.5m", 0, "too fine-grained"},
		{"2 ", 0, "not a non-negative decimal"},
		{"1Gi", 0, "not a non-negative decimal"},
		{"9223372036854775808m", 0, "too large"},
		{"9223372036854776", 0, "too large"},
		{"1/2", 0, "not a non-negative decimal"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCPU(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "invalid CPU amount") {
					t.Fatalf("ParseCPU(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseCPU(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"1Gi", 1 << 30, ""},
		{"512Mi", 512 << 20, ""},
		{"1G", 1e9, ""},
		{"1000", 1000, ""},
		{"64Ki", 64 << 10, ""},
		{"1k", 1000, ""},
		{"1K", 1000, ""},
		{"2M", 2e6, ""},
		{"1.5Gi", 3 << 29, ""},
		{"0.5Ki", 512, ""},
		{"3Ti", 3 << 40, ""},
		{"1Pi", 1 << 50, ""},
		{"7Ei", 7 << 60, ""},
		{"0", 0, ""},
		{"", 0, "missing number"},
		{"Gi", 0, "missing number"},
		{"1GB", 0, `unknown unit "GB"`},
		{"1gi", 0, `unknown unit "gi"`},
		{"100m", 0, `unknown unit "m"`},
		{"-1Gi", 0, `unknown unit "-1Gi"`},
		{"1e9", 0, `unknown unit "e9"`},
		{"1 Gi", 0, `unknown unit " Gi"`},
		{"0.5", 0, "too fine-grained"},
		{"1.2.3", 0, "not a non-negative decimal"},
		{"8Ei", 0, "too large"},
		{"10E", 0, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMemory(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "invalid memory amount") {
					t.Fatalf("ParseMemory(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMemory(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}
