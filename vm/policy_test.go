package vm

import (
	"errors"
	"testing"
	"time"
)

func TestParseIdleShutdown(t *testing.T) {
	def := DefaultIdleBounds()
	test := IdleBounds{Min: 20 * time.Second, Max: time.Hour}
	for _, tc := range []struct {
		in     string
		bounds IdleBounds
		want   time.Duration
		bad    bool
	}{
		{in: "30m", bounds: def, want: 30 * time.Minute},
		{in: "15m", bounds: def, want: 15 * time.Minute},
		{in: "2h", bounds: def, want: 2 * time.Hour},
		{in: "1d", bounds: def, want: 24 * time.Hour},
		{in: "1d12h", bounds: def, want: 36 * time.Hour},
		{in: "3d", bounds: def, want: 72 * time.Hour},
		{in: " OFF ", bounds: def, want: 0},
		{in: "off", bounds: test, want: 0},
		{in: "14m59s", bounds: def, bad: true},
		{in: "3d1s", bounds: def, bad: true},
		{in: "4d", bounds: def, bad: true},
		{in: "30s", bounds: def, bad: true},
		{in: "30s", bounds: test, want: 30 * time.Second},
		{in: "2h", bounds: test, bad: true},
		{in: "", bounds: def, bad: true},
		{in: "soon", bounds: def, bad: true},
		{in: "-1h", bounds: def, bad: true},
		{in: "xd", bounds: def, bad: true},
		{in: "d", bounds: def, bad: true},
	} {
		got, err := ParseIdleShutdown(tc.in, tc.bounds)
		if tc.bad {
			if err == nil || !errors.Is(err, ErrIdleShutdown) {
				t.Errorf("ParseIdleShutdown(%q) = %s, %v; want an ErrIdleShutdown", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseIdleShutdown(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatDurationRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{15 * time.Minute, "15m"},
		{2 * time.Hour, "2h"},
		{72 * time.Hour, "3d"},
		{36 * time.Hour, "1d12h"},
		{90 * time.Second, "1m30s"},
		{0, "0s"},
	} {
		got := FormatDuration(tc.d)
		if got != tc.want {
			t.Errorf("FormatDuration(%s) = %q, want %q", tc.d, got, tc.want)
		}
		if tc.d > 0 {
			if back, err := ParseDays(got); err != nil || back != tc.d {
				t.Errorf("ParseDays(%q) = %s, %v; want %s", got, back, err, tc.d)
			}
		}
	}
}
