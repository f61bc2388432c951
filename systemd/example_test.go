package systemd_test

import (
	"context"
	"log/slog"
	"net"
	"os/signal"
	"syscall"

	"github.com/labvm/labvm/systemd"
)

// The wiring cmd/labvmd needs: read systemd's environment once, serve on
// the activated socket if there is one, report readiness, say STOPPING=1 as
// soon as shutdown begins (the daemon then still waits for in-flight
// operations), and keep the watchdog fed while the daemon is healthy.
func Example() {
	notifier, activation, err := systemd.FromEnvironment()
	if err != nil {
		slog.Warn("systemd environment", "error", err) // the rest still works
	}
	ln, err := activation.APIListener(systemd.APISocketName)
	if err != nil {
		slog.Error("socket activation", "error", err)
		return
	}
	// ln == nil: not socket-activated, so the daemon binds the path itself.

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() { _ = notifier.Stopping() })

	watchdogCtx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go func() {
		// alive is whatever proves the daemon works, e.g. a libvirt call.
		alive := func(ctx context.Context) error { return nil }
		if err := notifier.RunWatchdog(watchdogCtx, alive); err != nil {
			slog.Error("watchdog", "error", err)
		}
	}()

	// run stands in for daemon.Run(ctx, ln, onReady).
	run := func(ctx context.Context, ln net.Listener, onReady func()) error {
		onReady()
		<-ctx.Done()
		return nil
	}
	_ = notifier.Status("reconciling instances")
	if err := run(ctx, ln, func() { _ = notifier.Ready() }); err != nil {
		slog.Error("labvmd", "error", err)
	}
}
