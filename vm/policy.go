package vm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Policy is what an instance's own user set about how it runs on its own:
// for now the idle shutdown. The store keeps it in its own bucket, apart
// from the record an operation writes (store.Tx.PutInstance does not
// write it; store.Tx.SetPolicy does), so setting it while an operation
// runs is never undone by that operation.
type Policy struct {
	// IdleShutdown stops the instance after this long without use; zero
	// is off.
	IdleShutdown time.Duration `json:"idle_shutdown,omitempty"`
}

// Idle shutdown bounds, as the managed service has them.
const (
	MinIdleShutdown = 15 * time.Minute
	MaxIdleShutdown = 72 * time.Hour
)

// ErrIdleShutdown is matched by every refused idle-shutdown value.
var ErrIdleShutdown = errors.New("invalid idle shutdown")

// IdleBounds are the values a host accepts for an idle shutdown.
type IdleBounds struct {
	Min, Max time.Duration
}

// DefaultIdleBounds are the bounds without host configuration.
func DefaultIdleBounds() IdleBounds { return IdleBounds{Min: MinIdleShutdown, Max: MaxIdleShutdown} }

// ParseIdleShutdown reads an idle shutdown as users write it: "off", or a
// duration such as 30m, 2h, 1d or 1d12h (d is 24 hours), within b. Off is
// zero.
func ParseIdleShutdown(s string, b IdleBounds) (time.Duration, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "off" || s == "0" || s == "none" {
		return 0, nil
	}
	d, err := ParseDays(s)
	if err != nil {
		return 0, fmt.Errorf("%w %q: use a duration such as 30m, 2h or 1d, or off", ErrIdleShutdown, s)
	}
	if d < b.Min || d > b.Max {
		return 0, fmt.Errorf("%w %s: it must be at least %s and at most %s", ErrIdleShutdown, FormatDuration(d), FormatDuration(b.Min), FormatDuration(b.Max))
	}
	return d, nil
}

// ParseDays is time.ParseDuration that also takes whole days ("3d",
// "1d12h"), positive only.
func ParseDays(s string) (time.Duration, error) {
	var days int
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("duration %q: bad day count", s)
		}
		days, s = n, s[i+1:]
	}
	var d time.Duration
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, err
		}
	}
	d += time.Duration(days) * 24 * time.Hour
	if d <= 0 {
		return 0, fmt.Errorf("duration must be positive")
	}
	return d, nil
}

// FormatDuration writes d the way ParseDays reads it, shortest first:
// 30m, 2h, 3d, 1d12h, 45s.
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	if days := d / (24 * time.Hour); days > 0 {
		fmt.Fprintf(&b, "%dd", days)
		d -= days * 24 * time.Hour
	}
	if h := d / time.Hour; h > 0 {
		fmt.Fprintf(&b, "%dh", h)
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		fmt.Fprintf(&b, "%dm", m)
		d -= m * time.Minute
	}
	if d > 0 {
		fmt.Fprintf(&b, "%ds", d/time.Second)
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}
