package daemon_test

import (
	"context"
	"strings"
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

// TestEventsFollowInstanceStates: FollowChanges sees an instance's
// states as its create moves it, and its deletion, each naming the state
// it left; Events (operations only) gets no instance lines.
func TestEventsFollowInstanceStates(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan api.Event, 256)
	opened := make(chan struct{}, 2)
	go func() {
		_ = td.Client.FollowChanges(ctx, func() { opened <- struct{}{} }, func(ev api.Event) { changes <- ev })
	}()
	onlyOps := make(chan api.Operation, 256)
	go func() {
		_ = td.Client.FollowEvents(ctx, func() { opened <- struct{}{} }, func(op api.Operation) { onlyOps <- op })
	}()
	<-opened
	<-opened
	for deadline := time.Now().Add(5 * time.Second); td.Ops().Events.Subscribers() < 2; {
		if time.Now().After(deadline) {
			t.Fatal("event streams never subscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := td.Create(t, daemontest.TinyReq("st-dev")); err != nil {
		t.Fatal(err)
	}
	op, err := td.Client.Delete(ctx, "st-dev")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := td.Client.Wait(ctx, op.ID, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	timeout := time.After(5 * time.Second)
	for done := false; !done; {
		select {
		case ev := <-changes:
			if in := ev.Instance; in != nil && in.Name == "st-dev" {
				got = append(got, string(in.Previous)+">"+string(in.State))
				done = in.Gone
			}
		case <-timeout:
			t.Fatalf("instance changes seen: %v; want through the deletion", got)
		}
	}
	want := []string{">Creating", "Creating>SettingUp", "SettingUp>Running", "Running>Deleting", "Deleting>"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("instance changes %v, want %v", got, want)
	}
	// The operations-only follower saw the same operations, nothing else.
	if len(onlyOps) == 0 {
		t.Fatal("the operations-only stream saw nothing")
	}
	for len(onlyOps) > 0 {
		if op := <-onlyOps; op.ID == "" {
			t.Fatalf("a line that is not an operation reached Events: %+v", op)
		}
	}
}
