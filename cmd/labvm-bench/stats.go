package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// sample is one figure's measurements.
type sample struct {
	name string
	runs []time.Duration
}

func (s *sample) add(d time.Duration) { s.runs = append(s.runs, d) }

func (s *sample) sorted() []time.Duration {
	out := slices.Clone(s.runs)
	slices.Sort(out)
	return out
}

// quantile is the nearest-rank quantile (q in 0..1): with few runs it is
// always a value that was really measured.
func (s *sample) quantile(q float64) time.Duration {
	v := s.sorted()
	if len(v) == 0 {
		return 0
	}
	if q <= 0 {
		return v[0]
	}
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

// median is the middle value (the mean of the two middle ones when even).
func (s *sample) median() time.Duration {
	v := s.sorted()
	n := len(v)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func (s *sample) p95() time.Duration { return s.quantile(0.95) }
func (s *sample) min() time.Duration { return s.quantile(0) }
func (s *sample) max() time.Duration { return s.quantile(1) }

// ms prints a duration in milliseconds with a precision suited to it.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f >= 1000:
		return fmt.Sprintf("%.0f ms", f)
	case f >= 10:
		return fmt.Sprintf("%.1f ms", f)
	}
	return fmt.Sprintf("%.2f ms", f)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
func kib(n int64) string { return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10)) }
