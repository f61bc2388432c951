package daemon_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/vm"
)

// guestWatchDaemon runs a daemon whose guest watcher looks every 20ms.
func guestWatchDaemon(t *testing.T) (*daemontest.Daemon, *daemontest.FakeHypervisor) {
	t.Helper()
	hv := daemontest.NewFakeHypervisor()
	td := daemontest.NewWith(t, hv, func(c *daemon.Config) { c.GuestWatch = 20 * time.Millisecond }, nil)
	return td, hv
}

func createRunning(t *testing.T, td *daemontest.Daemon, name string) api.Instance {
	t.Helper()
	if _, err := td.Create(t, daemontest.TinyReq(name)); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	inst, err := td.Client.Instance(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != api.StateRunning {
		t.Fatalf("%s is %s after create, want Running", name, inst.State)
	}
	return inst
}

// looks waits until the guest watcher has listed the domains n more
// times: whatever it was going to do about the state before, it did.
func looks(t *testing.T, hv *daemontest.FakeHypervisor, n int) {
	t.Helper()
	// A look lists, then acts: one more listing than asked proves the
	// n-th look's action (if any) has begun.
	want := hv.NamesCalls() + n + 1
	deadline := time.Now().Add(10 * time.Second)
	for hv.NamesCalls() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the guest watcher listed the domains %d times in 10s, want %d", hv.NamesCalls(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func opsBy(t *testing.T, c *client.Client, caller, target string) []api.Operation {
	t.Helper()
	all, err := c.Operations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []api.Operation
	for _, op := range all {
		if op.Caller == caller && op.Target == target {
			out = append(out, op)
		}
	}
	return out
}

func TestGuestWatcherStopsAVanishedGuest(t *testing.T) {
	td, hv := guestWatchDaemon(t)
	ctx := context.Background()
	inst := createRunning(t, td, "gone-dev")
	createRunning(t, td, "kept-dev")

	// The guest powers itself off: libvirt forgets the transient domain.
	if err := hv.Destroy(ctx, inst.Domain); err != nil {
		t.Fatal(err)
	}
	got := daemontest.WaitState(t, td.Client, "gone-dev", api.StateStopped)
	// The API adds the operation that set it.
	if want := lifecycle.GuestGoneReason("gone-dev"); !strings.HasPrefix(got.StateReason, want) {
		t.Errorf("state reason = %q, want it to start %q", got.StateReason, want)
	}
	// Kept like any stop: the address and disk stay.
	if got.IP != inst.IP || got.IP == "" {
		t.Errorf("address after the guest's poweroff = %q, want %q kept", got.IP, inst.IP)
	}
	stops := opsBy(t, td.Client, lifecycle.ActorGuest, "gone-dev")
	if len(stops) != 1 || stops[0].Kind != api.OpStop {
		t.Fatalf("operations by %s on gone-dev = %+v, want one stop", lifecycle.ActorGuest, stops)
	}
	if _, err := td.Client.Wait(ctx, stops[0].ID, nil); err != nil {
		t.Fatalf("the guest's stop: %v", err)
	}
	entries := auditBy(t, td.Client, lifecycle.ActorGuest)
	if len(entries) != 1 || entries[0].Action != "computes/stop/action" || entries[0].Target != "gone-dev" ||
		entries[0].Outcome != "succeeded" || entries[0].Operation != stops[0].ID {
		t.Errorf("audit by %s = %+v, want one succeeded stop of gone-dev by operation %s", lifecycle.ActorGuest, entries, stops[0].ID)
	}
	// Its neighbour's guest still runs and is left alone.
	looks(t, hv, 2)
	if k, _ := td.Client.Instance(ctx, "kept-dev"); k.State != api.StateRunning {
		t.Errorf("kept-dev is %s, want Running", k.State)
	}
	if n := len(opsBy(t, td.Client, lifecycle.ActorGuest, "kept-dev")); n != 0 {
		t.Errorf("%d operations by %s on kept-dev, want none", n, lifecycle.ActorGuest)
	}
	// It starts again like any stopped instance.
	op, err := td.Client.Start(ctx, "gone-dev")
	if err == nil {
		_, err = td.Client.Wait(ctx, op.ID, nil)
	}
	if err != nil {
		t.Fatalf("start after the guest's poweroff: %v", err)
	}
	if got, _ := td.Client.Instance(ctx, "gone-dev"); got.State != api.StateRunning || got.StateReason != "" {
		t.Errorf("after start: %s (%q), want Running with no reason", got.State, got.StateReason)
	}
}

func TestGuestWatcherLeavesAlone(t *testing.T) {
	t.Run("an instance an operation holds", func(t *testing.T) {
		td, hv := guestWatchDaemon(t)
		inst := createRunning(t, td, "held-dev")
		op, err := td.Ops().Begin(api.OpStart, inst.Name, inst.ID, ops.Who{Name: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if err := hv.Destroy(context.Background(), inst.Domain); err != nil {
			t.Fatal(err)
		}
		looks(t, hv, 3)
		if got, _ := td.Client.Instance(context.Background(), "held-dev"); got.State != api.StateRunning {
			t.Errorf("held-dev is %s while an operation holds it, want Running (the operation decides)", got.State)
		}
		if n := len(opsBy(t, td.Client, lifecycle.ActorGuest, "held-dev")); n != 0 {
			t.Errorf("%d operations by %s while held, want none", n, lifecycle.ActorGuest)
		}
		// Once released, the vanished guest is noticed.
		op.Finish(nil)
		daemontest.WaitState(t, td.Client, "held-dev", api.StateStopped)
	})

	t.Run("a Stopped instance", func(t *testing.T) {
		td, hv := guestWatchDaemon(t)
		createRunning(t, td, "stopped-dev")
		op, err := td.Client.Stop(context.Background(), "stopped-dev")
		if err == nil {
			_, err = td.Client.Wait(context.Background(), op.ID, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		// With nothing expecting a domain, the watcher does not even
		// ask libvirt.
		before := hv.NamesCalls()
		time.Sleep(200 * time.Millisecond) // ten looks
		if n := hv.NamesCalls(); n != before {
			t.Errorf("the watcher listed the domains %d times with no instance running, want 0", n-before)
		}
		got, _ := td.Client.Instance(context.Background(), "stopped-dev")
		if got.State != api.StateStopped || got.StateReason != "" {
			t.Errorf("stopped-dev = %s (%q), want Stopped as the user left it", got.State, got.StateReason)
		}
		if n := len(opsBy(t, td.Client, lifecycle.ActorGuest, "stopped-dev")); n != 0 {
			t.Errorf("%d operations by %s on a Stopped instance, want none", n, lifecycle.ActorGuest)
		}
	})

	t.Run("everything, while libvirt cannot be listed", func(t *testing.T) {
		// A failed listing is no list at all, never "every domain gone".
		td, hv := guestWatchDaemon(t)
		inst := createRunning(t, td, "blind-dev")
		if err := hv.Destroy(context.Background(), inst.Domain); err != nil {
			t.Fatal(err)
		}
		hv.SetDown(true)
		looks(t, hv, 3)
		if got, _ := td.Client.Instance(context.Background(), "blind-dev"); got.State != api.StateRunning {
			t.Errorf("blind-dev is %s while libvirt cannot be listed, want Running", got.State)
		}
		hv.SetDown(false)
		daemontest.WaitState(t, td.Client, "blind-dev", api.StateStopped)
	})

	t.Run("a record that changed between the look and the action", func(t *testing.T) {
		td, hv := guestWatchDaemon(t)
		ctx := context.Background()
		inst := createRunning(t, td, "race-dev")
		// The look reads race-dev as Running, then lists the domains
		// while a restart has just taken its domain down; the restart
		// finishes before the watcher acts.
		var once sync.Once
		restarted := make(chan error, 1)
		hv.SetAfterList(func(names map[string]bool) {
			if names[inst.Domain] {
				return
			}
			once.Do(func() {
				op, err := td.Client.Restart(ctx, "race-dev")
				if err == nil {
					_, err = td.Client.Wait(ctx, op.ID, nil)
				}
				restarted <- err
			})
		})
		if err := hv.Destroy(ctx, inst.Domain); err != nil { // the restart's shutdown
			t.Fatal(err)
		}
		select {
		case err := <-restarted:
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the watcher never listed the domains with race-dev's gone")
		}
		hv.SetAfterList(nil)
		looks(t, hv, 2)
		got, _ := td.Client.Instance(ctx, "race-dev")
		if got.State != api.StateRunning {
			t.Errorf("race-dev is %s (%q) after a restart the watcher raced, want Running", got.State, got.StateReason)
		}
		if st, _ := hv.DomainState(ctx, inst.Domain); st != vm.DomainRunning {
			t.Errorf("race-dev's domain is %v, want the restarted one running", st)
		}
		if n := len(opsBy(t, td.Client, lifecycle.ActorGuest, "race-dev")); n != 0 {
			t.Errorf("%d operations by %s on race-dev, want none", n, lifecycle.ActorGuest)
		}
	})

	t.Run("the claim re-reads the record", func(t *testing.T) {
		// The same rule where it is enforced: a stop that asks for an
		// unchanged record refuses one changed since it was read.
		td, _ := guestWatchDaemon(t)
		ctx := context.Background()
		createRunning(t, td, "claim-dev")
		seen, err := td.Lifecycle().InstanceByName("claim-dev")
		if err != nil {
			t.Fatal(err)
		}
		op, err := td.Client.Restart(ctx, "claim-dev")
		if err == nil {
			_, err = td.Client.Wait(ctx, op.ID, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = td.Lifecycle().ActFor(lifecycle.PolicyAction{Who: ops.Who{Name: lifecycle.ActorGuest}, Action: vm.ActionStop,
			OnlyFrom: []vm.State{vm.StateRunning}, Unchanged: true, Reason: "test"}, seen)
		if !errors.Is(err, lifecycle.ErrRecordChanged) {
			t.Errorf("stop of a changed record = %v, want ErrRecordChanged", err)
		}
		if got, _ := td.Client.Instance(ctx, "claim-dev"); got.State != api.StateRunning {
			t.Errorf("claim-dev is %s after a refused stop, want Running", got.State)
		}
		// The current record is acted on.
		cur, err := td.Lifecycle().InstanceByName("claim-dev")
		if err != nil {
			t.Fatal(err)
		}
		op2, err := td.Lifecycle().ActFor(lifecycle.PolicyAction{Who: ops.Who{Name: lifecycle.ActorGuest}, Action: vm.ActionStop,
			OnlyFrom: []vm.State{vm.StateRunning}, Unchanged: true, Reason: "test"}, cur)
		if err != nil {
			t.Fatalf("stop of the current record: %v", err)
		}
		if _, err := td.Client.Wait(ctx, op2.ID, nil); err != nil {
			t.Fatal(err)
		}
		if got, _ := td.Client.Instance(ctx, "claim-dev"); got.State != api.StateStopped {
			t.Errorf("claim-dev is %s, want Stopped", got.State)
		}
	})
}

// auditBy waits for the first audit entry by a caller: an operation's is
// written just after it reads as done.
func auditBy(t *testing.T, c *client.Client, caller string) []api.AuditEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := c.Audit(context.Background(), client.AuditQuery{Caller: caller})
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 0 || time.Now().After(deadline) {
			return entries
		}
		time.Sleep(10 * time.Millisecond)
	}
}
