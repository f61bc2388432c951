package lifecycle

import (
	"testing"
)

func TestParseMemAvailable(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"MemTotal:       24576000 kB\nMemFree: 1000 kB\nMemAvailable:   20000000 kB\n", 20000000 << 10, true},
		{"MemTotal: 1 kB\n", 0, false},
		{"MemAvailable: lots kB\n", 0, false},
	}
	for _, tt := range tests {
		got, err := parseMemAvailable([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseMemAvailable(%q) = %d, %v", tt.in, got, err)
		}
	}
}
