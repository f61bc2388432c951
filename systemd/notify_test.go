package systemd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket stands in for systemd's notify socket: a real unixgram
// socket whose received datagrams the test reads back.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
}

func listenNotify(t *testing.T, addr string) *notifySocket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &notifySocket{t: t, conn: conn}
}

// next returns the next datagram, or fails the test after a while.
func (s *notifySocket) next() string {
	s.t.Helper()
	msg, ok := s.recv(5 * time.Second)
	if !ok {
		s.t.Fatal("no datagram received")
	}
	return msg
}

func (s *notifySocket) recv(wait time.Duration) (string, bool) {
	s.t.Helper()
	buf := make([]byte, 4096)
	if err := s.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		s.t.Fatal(err)
	}
	n, err := s.conn.Read(buf)
	if isTimeout(err) {
		return "", false
	}
	if err != nil {
		s.t.Fatalf("read notify socket: %v", err)
	}
	return string(buf[:n]), true
}

// quiet asserts that nothing arrives for a while.
func (s *notifySocket) quiet(wait time.Duration) {
	s.t.Helper()
	if msg, ok := s.recv(wait); ok {
		s.t.Fatalf("unexpected datagram %q", msg)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestNotifierSendsExactDatagrams(t *testing.T) {
	sockets := map[string]string{
		"path":     filepath.Join(t.TempDir(), "notify"),
		"abstract": fmt.Sprintf("@labvm-systemd-test-%d", time.Now().UnixNano()),
	}
	calls := []struct {
		name string
		call func(*Notifier) error
		want string
	}{
		{"ready", (*Notifier).Ready, "READY=1"},
		{"status", func(n *Notifier) error { return n.Status("reconciling 3 instances") }, "STATUS=reconciling 3 instances"},
		{"status newlines flattened", func(n *Notifier) error { return n.Status("boom\nREADY=1\r\nx") }, "STATUS=boom READY=1 x"},
		{"stopping", (*Notifier).Stopping, "STOPPING=1"},
		{"watchdog", (*Notifier).Watchdog, "WATCHDOG=1"},
	}
	for kind, addr := range sockets {
		sock := listenNotify(t, addr)
		t.Setenv("NOTIFY_SOCKET", addr)
		n := &Notifier{enabled: true}
		for _, c := range calls {
			t.Run(kind+"/"+c.name, func(t *testing.T) {
				if err := c.call(n); err != nil {
					t.Fatalf("send: %v", err)
				}
				if got := sock.next(); got != c.want {
					t.Errorf("datagram = %q, want %q", got, c.want)
				}
			})
		}
	}
}

func TestNotifierOffSystemdIsNoop(t *testing.T) {
	for name, n := range map[string]*Notifier{
		"zero value": {},
		"nil":        nil,
		// A watchdog timeout without a socket to ping is no watchdog.
		"watchdog but no socket": {watchdog: time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			for _, err := range []error{n.Ready(), n.Status("x"), n.Stopping(), n.Watchdog()} {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
			}
			if d, ok := n.WatchdogInterval(); ok {
				t.Errorf("WatchdogInterval = %v, true; want false", d)
			}
			done := make(chan error, 1)
			go func() { done <- n.RunWatchdog(context.Background(), nil) }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("RunWatchdog = %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("RunWatchdog blocked without a watchdog")
			}
		})
	}
}

func TestNotifierErrors(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	err := (&Notifier{enabled: true}).Ready()
	if err == nil || !strings.Contains(err.Error(), "sd_notify READY") {
		t.Fatalf("Ready() = %v, want an error naming sd_notify READY", err)
	}
}

// TestFromEnvironment reads a table of environments the way labvmd's
// main does, through go-systemd, and checks what reaches the daemon and
// what is left for children.
func TestFromEnvironment(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name       string
		env        map[string]string
		wantNotify bool
		wantPeriod time.Duration // 0: no watchdog
		wantErr    string
	}{
		{name: "off systemd", env: map[string]string{}},
		{
			name:       "watchdog for us",
			env:        map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": self},
			wantNotify: true, wantPeriod: 15 * time.Second,
		},
		{
			name:       "watchdog without WATCHDOG_PID is ours",
			env:        map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1000000"},
			wantNotify: true, wantPeriod: 500 * time.Millisecond,
		},
		{
			name:       "watchdog for another process",
			env:        map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
			wantNotify: true,
		},
		{
			name: "watchdog but no notify socket",
			env:  map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": self},
		},
		{
			name:       "watchdog usec garbage",
			env:        map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "soon"},
			wantNotify: true, wantErr: "WATCHDOG_USEC",
		},
		{
			name:       "watchdog usec zero",
			env:        map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "0"},
			wantNotify: true, wantErr: "positive",
		},
		{
			// Descriptors meant for another process are not ours to take.
			name:       "listen fds for another process",
			env:        map[string]string{"NOTIFY_SOCKET": "@sd", "LISTEN_PID": "1", "LISTEN_FDS": "1"},
			wantNotify: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				t.Setenv(k, tt.env[k]) // restored after the subtest
				if _, ok := tt.env[k]; !ok {
					_ = os.Unsetenv(k)
				}
			}
			n, a, err := FromEnvironment()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			if n == nil || a == nil {
				t.Fatalf("got nil results (%v, %v); both must always be usable", n, a)
			}
			if n.enabled != tt.wantNotify {
				t.Errorf("notify enabled = %v, want %v", n.enabled, tt.wantNotify)
			}
			period, ok := n.WatchdogInterval()
			if ok != (tt.wantPeriod > 0) || period != tt.wantPeriod {
				t.Errorf("WatchdogInterval = %v, %v; want %v", period, ok, tt.wantPeriod)
			}
			if lns, err := a.Listeners(); len(lns) != 0 || err != nil {
				t.Errorf("listeners = %v, %v; want none", lns, err)
			}
			for _, k := range []string{"WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				if v, set := os.LookupEnv(k); set {
					t.Errorf("%s=%s left for children", k, v)
				}
			}
		})
	}
}

func TestRunWatchdog(t *testing.T) {
	const period = 20 * time.Millisecond
	errSick := errors.New("libvirt unreachable")
	tests := []struct {
		name string
		// sickAt is the health check (1-based) that fails; 0 = never.
		sickAt int32
		// pings is how many WATCHDOG=1 to see before judging.
		pings int
		// cancel ends ctx after the pings.
		cancel    bool
		wantErr   error
		wantAfter string // datagram after the pings, "" for none
	}{
		{name: "pings until cancelled", pings: 4, cancel: true},
		{name: "stops when unhealthy", sickAt: 3, pings: 2, wantErr: errSick,
			wantAfter: "STATUS=watchdog: daemon unhealthy, pings stopped: libvirt unreachable"},
		{name: "unhealthy at once", sickAt: 1, pings: 0, wantErr: errSick,
			wantAfter: "STATUS=watchdog: daemon unhealthy, pings stopped: libvirt unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := filepath.Join(t.TempDir(), "notify")
			sock := listenNotify(t, addr)
			t.Setenv("NOTIFY_SOCKET", addr)
			n := &Notifier{enabled: true, watchdog: 2 * period}
			var checks atomic.Int32
			healthy := func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					return errors.New("health check got no deadline")
				}
				if checks.Add(1) == tt.sickAt {
					return errSick
				}
				return nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- n.RunWatchdog(ctx, healthy) }()

			for i := range tt.pings {
				if got := sock.next(); got != "WATCHDOG=1" {
					t.Fatalf("datagram %d = %q, want WATCHDOG=1", i, got)
				}
			}
			if tt.pings > 1 {
				// Pings are paced by the period, not sent in a burst.
				if least := time.Duration(tt.pings-1) * period; time.Since(start) < least {
					t.Errorf("%d pings took %v, want at least %v", tt.pings, time.Since(start), least)
				}
			}
			if tt.wantAfter != "" {
				if got := sock.next(); got != tt.wantAfter {
					t.Fatalf("datagram = %q, want %q", got, tt.wantAfter)
				}
			}
			if tt.cancel {
				cancel()
			}
			select {
			case err := <-done:
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Fatalf("RunWatchdog = %v, want %v", err, tt.wantErr)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("RunWatchdog did not return")
			}
			// Once it has returned, systemd hears nothing more from it
			// (a ping racing the cancel may already be queued).
			for {
				msg, ok := sock.recv(5 * period)
				if !ok {
					break
				}
				if !tt.cancel || msg != "WATCHDOG=1" {
					t.Fatalf("datagram %q after RunWatchdog returned", msg)
				}
			}
			sock.quiet(5 * period)
		})
	}
}
