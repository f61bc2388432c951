package storage

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// unitShift maps an accepted suffix to a binary shift. Units are always
// powers of 1024: the sizes users type are compared against what qemu-img and
// guests report, and both speak binary.
func unitShift(unit string) (uint, bool) {
	switch strings.ToLower(unit) {
	case "":
		return 0, true
	case "k", "kib":
		return 10, true
	case "m", "mib":
		return 20, true
	case "g", "gib":
		return 30, true
	case "t", "tib":
		return 40, true
	case "p", "pib":
		return 50, true
	}
	return 0, false
}

// ParseSize parses a disk size such as "120G", "120GiB", "512M", "1T" or a
// plain byte count. Units are binary and case-insensitive; the result is
// always positive.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	i := 0
	for i < len(in) && in[i] >= '0' && in[i] <= '9' {
		i++
	}
	if strings.HasPrefix(in, "-") {
		return 0, fmt.Errorf("size %q: must be greater than zero", s)
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a whole number with an optional unit K, M, G, T or P (e.g. 120G)", s)
	}
	shift, ok := unitShift(strings.TrimSpace(in[i:]))
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q; use K, M, G, T or P (binary, e.g. 120G or 120GiB)", s, in[i:])
	}
	n, err := strconv.ParseInt(in[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: number out of range", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q: must be greater than zero", s)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n << shift, nil
}

// FormatSize is ParseSize's inverse for messages: the largest binary unit
// that divides n, so "120G" reads back as the same size.
func FormatSize(n int64) string {
	switch {
	case n >= 1<<40 && n%(1<<40) == 0:
		return fmt.Sprintf("%dT", n>>40)
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// FormatIEC formats a byte count for people reading tables and progress
// lines: the largest binary unit below it, one decimal when not whole
// ("1.5 GiB", "512 MiB", "100 B"). Unlike FormatSize it rounds, so it is
// for display only, never for a size to be read back.
func FormatIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %ciB", int64(v), "KMGTPE"[exp])
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[exp])
}
