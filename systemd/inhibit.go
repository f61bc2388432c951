package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/coreos/go-systemd/v22/login1"
)

const prepareForShutdown = "org.freedesktop.login1.Manager.PrepareForShutdown"

// WatchShutdown holds a logind "delay" inhibitor lock on shutdown for as
// long as ctx lives, and when logind announces the host is going down
// (PrepareForShutdown true) runs onShutdown, then releases the lock so the
// shutdown proceeds. logind waits at most InhibitDelayMaxSec= (5 s by
// default) for a delay lock, so this is the early start of a clean stop,
// not its whole bound: labvm-guests.service, stopped before labvmd, waits
// for the rest. If the shutdown is cancelled (PrepareForShutdown false) the
// lock is taken again.
//
// Where logind or the system bus is absent (containers, this CI machine)
// it logs that once, at info, and returns nil: nothing else depends on it.
// It blocks; the caller runs it in a goroutine and ends it with ctx.
func WatchShutdown(ctx context.Context, log *slog.Logger, onShutdown func(context.Context)) error {
	conn, err := login1.New()
	if err != nil {
		log.Info("logind not reachable: no shutdown inhibitor; a host shutdown stops instances through labvm-guests.service only", "error", err)
		return nil
	}
	defer conn.Close()
	signals := conn.Subscribe("PrepareForShutdown")
	lock, err := takeLock(conn)
	if err != nil {
		log.Info("logind refused a shutdown inhibitor; a host shutdown stops instances through labvm-guests.service only", "error", err)
		return nil
	}
	log.Debug("holding a logind shutdown delay lock")
	defer func() {
		if lock != nil {
			lock.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case sig, ok := <-signals:
			if !ok {
				return fmt.Errorf("logind: system bus connection closed")
			}
			if sig.Name != prepareForShutdown || len(sig.Body) != 1 {
				continue
			}
			going, _ := sig.Body[0].(bool)
			switch {
			case going && lock != nil:
				log.Info("host shutting down (logind): stopping instances before releasing the delay lock")
				onShutdown(ctx)
				lock.Close()
				lock = nil
			case !going && lock == nil:
				if lock, err = takeLock(conn); err != nil {
					log.Warn("host shutdown cancelled, but logind refused a new inhibitor", "error", err)
				}
			}
		}
	}
}

func takeLock(conn *login1.Conn) (*os.File, error) {
	return conn.Inhibit("shutdown", "labvmd", "stopping labvm instances cleanly", "delay")
}
