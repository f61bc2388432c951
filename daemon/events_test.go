package daemon_test

import (
	"context"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
)

// TestEventsFollowOperations: an event stream sees an operation start,
// move through its stages and finish.
func TestEventsFollowOperations(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan api.Operation, 64)
	done := make(chan error, 1)
	go func() { done <- td.Client.Events(ctx, func(op api.Operation) { events <- op }) }()

	// The stream is up once the daemon has a subscriber.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := td.Ops().Events.Subscribers()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("event stream never subscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	op, err := td.Create(t, daemontest.TinyReq("evt-dev"))
	if err != nil {
		t.Fatal(err)
	}
	sawStart, sawStage, sawEnd := false, false, false
	timeout := time.After(5 * time.Second)
	for !sawEnd {
		select {
		case e := <-events:
			if e.ID != op.ID {
				continue
			}
			sawStart = sawStart || (e.Status == api.OperationRunning && len(e.Stages) == 0)
			sawStage = sawStage || len(e.Stages) > 0
			sawEnd = e.Status == api.OperationSucceeded
		case <-timeout:
			t.Fatalf("events seen: start %v, stage %v, end %v", sawStart, sawStage, sawEnd)
		}
	}
	if !sawStart || !sawStage {
		t.Fatalf("events seen: start %v, stage %v", sawStart, sawStage)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Events after cancel: %v", err)
	}
}
