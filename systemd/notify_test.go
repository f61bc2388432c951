package systemd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
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
		n := NewNotifier(addr)
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
		"empty socket": NewNotifier(""),
		"zero value":   {},
		"nil":          nil,
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
	tests := []struct {
		name   string
		socket string
		want   string
	}{
		{"nobody listening", filepath.Join(t.TempDir(), "absent"), "sd_notify READY"},
		{"relative path", "notify.sock", "unsupported NOTIFY_SOCKET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewNotifier(tt.socket).Ready()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ready() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	const self = 4242
	tests := []struct {
		name       string
		env        map[string]string
		wantPeriod time.Duration // 0: no watchdog
		wantFDs    int
		wantNames  []string
		wantErr    string
	}{
		{name: "off systemd", env: map[string]string{}},
		{
			name:       "watchdog for us",
			env:        map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"},
			wantPeriod: 15 * time.Second,
		},
		{
			name:       "watchdog without WATCHDOG_PID is ours",
			env:        map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1000000"},
			wantPeriod: 500 * time.Millisecond,
		},
		{
			name: "watchdog for another process",
			env:  map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
		},
		{
			name: "watchdog but no notify socket",
			env:  map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"},
		},
		{
			name:    "watchdog usec garbage",
			env:     map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "soon"},
			wantErr: "WATCHDOG_USEC",
		},
		{
			name:    "watchdog usec zero",
			env:     map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "0"},
			wantErr: "out of range",
		},
		{
			name:      "listen fds for us",
			env:       map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "labvmd.socket:other"},
			wantFDs:   2,
			wantNames: []string{"labvmd.socket", "other"},
		},
		{
			name:      "listen fds without names",
			env:       map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1"},
			wantFDs:   1,
			wantNames: []string{"unknown"},
		},
		{
			name: "listen fds for another process",
			env:  map[string]string{"LISTEN_PID": "1", "LISTEN_FDS": "1"},
		},
		{
			name: "listen fds without LISTEN_PID",
			env:  map[string]string{"LISTEN_FDS": "1"},
		},
		{
			name:    "listen fds garbage",
			env:     map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "-1"},
			wantErr: "LISTEN_FDS",
		},
		{
			name:    "listen fd names do not match count",
			env:     map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "one"},
			wantErr: "LISTEN_FDNAMES",
		},
		{
			name:       "one bad part leaves the other working",
			env:        map[string]string{"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "2000000", "LISTEN_PID": "pid", "LISTEN_FDS": "1"},
			wantPeriod: time.Second,
			wantErr:    "LISTEN_PID",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, a, err := fromEnv(func(k string) string { return tt.env[k] }, self)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			if n == nil || a == nil {
				t.Fatalf("got nil results (%v, %v); both must always be usable", n, a)
			}
			period, ok := n.WatchdogInterval()
			if ok != (tt.wantPeriod > 0) || period != tt.wantPeriod {
				t.Errorf("WatchdogInterval = %v, %v; want %v", period, ok, tt.wantPeriod)
			}
			if a.count != tt.wantFDs || strings.Join(a.names, ":") != strings.Join(tt.wantNames, ":") {
				t.Errorf("activation = %d fds %q, want %d %q", a.count, a.names, tt.wantFDs, tt.wantNames)
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
			n := &Notifier{socket: addr, watchdog: 2 * period}
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
