package systemd

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// sendTimeout bounds one notification. Datagrams to systemd normally
// never block, but a wedged manager with a full receive queue must not be
// able to hang the daemon's shutdown or its watchdog loop.
const sendTimeout = 2 * time.Second

// Notifier tells the service manager about the daemon's state over
// NOTIFY_SOCKET (sd_notify(3)). The zero value and a nil *Notifier are
// valid and send nothing, so callers never need to check whether they run
// under systemd. A Notifier is immutable and safe for concurrent use.
type Notifier struct {
	socket   string        // NOTIFY_SOCKET: a path, or "@name" for an abstract socket; "" = off systemd
	watchdog time.Duration // WATCHDOG_USEC meant for this process; 0 = no watchdog
}

// NewNotifier returns a Notifier that sends to socketPath, a filesystem
// path or an abstract socket name with a leading '@' (as systemd spells
// them in NOTIFY_SOCKET). An empty socketPath gives a Notifier that sends
// nothing. It has no watchdog; FromEnvironment sets that up.
func NewNotifier(socketPath string) *Notifier {
	return &Notifier{socket: socketPath}
}

// Ready reports that start-up is finished and the API accepts calls
// (READY=1). With Type=notify, systemd orders dependents after this.
func (n *Notifier) Ready() error { return n.send("READY=1") }

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
func (n *Notifier) Stopping() error { return n.send("STOPPING=1") }

// Watchdog sends one keep-alive ping (WATCHDOG=1). Most callers want
// RunWatchdog instead.
func (n *Notifier) Watchdog() error { return n.send("WATCHDOG=1") }

// WatchdogInterval is how often to ping: half the WatchdogSec= timeout
// systemd gave this process, as sd_watchdog_enabled(3) recommends, so one
// late ping does not get the daemon killed. ok is false when there is no
// watchdog for this process (none configured, WATCHDOG_PID names another
// process, or no NOTIFY_SOCKET to ping).
func (n *Notifier) WatchdogInterval() (period time.Duration, ok bool) {
	if n == nil || n.socket == "" || n.watchdog <= 0 {
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

// send writes one datagram to NOTIFY_SOCKET. Go's net package maps a
// leading '@' to the abstract namespace, which is how systemd writes
// abstract notify sockets, so both forms work unchanged.
func (n *Notifier) send(state string) error {
	if n == nil || n.socket == "" {
		return nil
	}
	key, _, _ := strings.Cut(state, "=")
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return fmt.Errorf("sd_notify %s: unsupported NOTIFY_SOCKET %q (want a path or @abstract name)", key, n.socket)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", key, err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return fmt.Errorf("sd_notify %s: set deadline: %w", key, err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s to %s: %w", key, n.socket, err)
	}
	return nil
}
