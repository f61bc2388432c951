package systemd

import (
	"context"
	"fmt"
	"strings"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// Notifier tells the service manager about the daemon's state
// (sd_notify(3)) through go-systemd. The zero value and a nil *Notifier
// are valid and send nothing, so callers never need to check whether they
// run under systemd. A Notifier is immutable and safe for concurrent use.
// FromEnvironment makes the one the daemon uses.
type Notifier struct {
	enabled  bool          // NOTIFY_SOCKET was set at start
	watchdog time.Duration // WATCHDOG_USEC meant for this process; 0 = no watchdog
}

// Ready reports that start-up is finished and the API accepts calls
// (READY=1). With Type=notify, systemd orders dependents after this.
func (n *Notifier) Ready() error { return n.send(sddaemon.SdNotifyReady) }

// Status sets the free-form line `systemctl status` shows (STATUS=...).
// Newlines are replaced by spaces: the protocol is newline-separated
// assignments, so a raw newline in a message (an error text, say) would
// let it smuggle in other assignments such as READY=1.
func (n *Notifier) Status(line string) error {
	line = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(line)
	return n.send("STATUS=" + line)
}

// Stopping reports that shutdown has begun (STOPPING=1), so systemd shows
// "deactivating" instead of treating the wait for in-flight operations as
// a hang of a running service.
func (n *Notifier) Stopping() error { return n.send(sddaemon.SdNotifyStopping) }

// Watchdog sends one keep-alive ping (WATCHDOG=1). Most callers want
// RunWatchdog instead.
func (n *Notifier) Watchdog() error { return n.send(sddaemon.SdNotifyWatchdog) }

// WatchdogInterval is how often to ping: half the WatchdogSec= timeout
// systemd gave this process, as sd_watchdog_enabled(3) recommends, so one
// late ping does not get the daemon killed. ok is false when there is no
// watchdog for this process (none configured, WATCHDOG_PID names another
// process, or no NOTIFY_SOCKET to ping).
func (n *Notifier) WatchdogInterval() (period time.Duration, ok bool) {
	if n == nil || !n.enabled || n.watchdog <= 0 {
		return 0, false
	}
	return n.watchdog / 2, true
}

// RunWatchdog pings the watchdog every WatchdogInterval for as long as
// healthy returns nil, and returns nil once ctx ends. It blocks: the caller
// runs it in a goroutine it owns and ends it by cancelling ctx.
//
// healthy (nil means always healthy) gets a context bounded by one period,
// so a check that hangs counts as a failure instead of silently stopping
// the pings. When a check fails, RunWatchdog sets STATUS to the reason and
// returns the error without pinging again: systemd then treats the daemon
// as hung once WatchdogSec= passes and restarts it (Restart=on-failure).
// It also returns an error if a ping cannot be sent. Without a watchdog
// for this process it returns nil at once.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func(context.Context) error) error {
	period, ok := n.WatchdogInterval()
	if !ok {
		return nil
	}
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	for {
		// Check and ping straight away rather than after one period, so
		// time spent in start-up does not eat into the first interval.
		if healthy != nil {
			checkCtx, cancel := context.WithTimeout(ctx, period)
			err := healthy(checkCtx)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				unhealthy := fmt.Errorf("watchdog: daemon unhealthy, pings stopped: %w", err)
				if serr := n.Status(unhealthy.Error()); serr != nil {
					return fmt.Errorf("%w (and %w)", unhealthy, serr)
				}
				return unhealthy
			}
		}
		if err := n.Watchdog(); err != nil {
			return fmt.Errorf("watchdog: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// send hands one state to go-systemd's SdNotify, which writes it to
// NOTIFY_SOCKET (a path, or an abstract socket spelt with a leading '@').
func (n *Notifier) send(state string) error {
	if n == nil || !n.enabled {
		return nil
	}
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		key, _, _ := strings.Cut(state, "=")
		return fmt.Errorf("sd_notify %s: %w", key, err)
	}
	return nil
}
