package systemd

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWatchShutdownWithoutLogind: with no system bus to reach (as in
// containers and on CI), WatchShutdown says so once and returns without
// error, never calling onShutdown.
func TestWatchShutdownWithoutLogind(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "no-bus"))
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	done := make(chan error, 1)
	called := false
	go func() {
		done <- WatchShutdown(context.Background(), log, func(context.Context) { called = true })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchShutdown = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchShutdown blocked without logind")
	}
	if called {
		t.Error("onShutdown ran without a shutdown")
	}
	if n := strings.Count(logs.String(), "no shutdown inhibitor"); n != 1 {
		t.Errorf("logged the missing logind %d times, want once:\n%s", n, logs.String())
	}
}
