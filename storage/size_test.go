package storage

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "120G", want: 120 << 30},
		{in: "120GiB", want: 120 << 30},
		{in: "120g", want: 120 << 30},
		{in: "512M", want: 512 << 20},
		{in: "512MiB", want: 512 << 20},
		{in: "64K", want: 64 << 10},
		{in: "1T", want: 1 << 40},
		{in: "2TiB", want: 2 << 40},
		{in: "1073741824", want: 1 << 30},
		{in: " 8G ", want: 8 << 30},
		{in: "8191P", want: 8191 << 50},
		{in: "", wantErr: "whole number"},
		{in: "G", wantErr: "whole number"},
		{in: "abc", wantErr: "whole number"},
		{in: "1.5G", wantErr: "unknown unit"},
		{in: "12X", wantErr: "unknown unit"},
		{in: "12GB", wantErr: "unknown unit"},
		{in: "0", wantErr: "greater than zero"},
		{in: "0G", wantErr: "greater than zero"},
		{in: "-1G", wantErr: "greater than zero"},
		{in: "8192P", wantErr: "too large"},
		{in: "9223372036854775808", wantErr: "out of range"},
		{in: "99999999999T", wantErr: "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSize(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestFormatSizeReadsBack(t *testing.T) {
	for _, n := range []int64{120 << 30, 2 << 40, 512 << 20, 3*(1<<30) + 1} {
		s := FormatSize(n)
		if n%(1<<20) != 0 {
			if s != fmt.Sprintf("%d bytes", n) {
				t.Errorf("FormatSize(%d) = %q", n, s)
			}
			continue
		}
		back, err := ParseSize(s)
		if err != nil || back != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, s, back, err)
		}
	}
}

func TestFormatIEC(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{512 << 20, "512 MiB"},
		{3<<30 + 1<<29, "3.5 GiB"},
		{2 << 40, "2 TiB"},
		{1 << 60, "1 EiB"},
		{1<<20 - 1, "1024.0 KiB"}, // rounds, never read back
	}
	for _, tt := range tests {
		if got := FormatIEC(tt.n); got != tt.want {
			t.Errorf("FormatIEC(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
