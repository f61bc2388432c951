package policy_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/policy"
	"github.com/labvm/labvm/vm"
)

// fakeClock is a policy.Clock the test moves by hand.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) policy.Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{c: f, at: f.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- f.now
		return t
	}
	f.timers = append(f.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, o := range t.c.timers {
		if o == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// set moves the clock to now and fires the timers due by then.
func (f *fakeClock) set(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
	keep := f.timers[:0]
	for _, t := range f.timers {
		if !t.at.After(now) {
			t.ch <- now
			continue
		}
		keep = append(keep, t)
	}
	f.timers = keep
}

// waitArmed waits until n timers wait: the policy's loops (idle,
// schedules) have finished their passes and sleep again.
func (f *fakeClock) waitArmed(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		armed := len(f.timers)
		f.mu.Unlock()
		if armed >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy loops did not sleep again (%d timers armed, want %d)", armed, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// step moves the clock by d and waits for both loops to have looked.
func (f *fakeClock) step(t *testing.T, d time.Duration) {
	t.Helper()
	f.set(f.Now().Add(d))
	f.waitArmed(t, 2)
}

func startDaemon(t *testing.T, dir string, clock *fakeClock, hv *daemontest.FakeHypervisor) *daemontest.Daemon {
	t.Helper()
	td := daemontest.NewAtWith(t, dir, hv, daemon.Options{PolicyClock: clock}, nil, nil)
	clock.waitArmed(t, 2)
	return td
}

// policyOps lists the operations a policy did.
func policyOps(t *testing.T, c *client.Client, actor string) []api.Operation {
	t.Helper()
	all, err := c.Operations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []api.Operation
	for _, op := range all {
		if op.Caller == actor {
			out = append(out, op)
		}
	}
	return out
}

// auditOf waits for n audit entries by a caller: an operation's is
// written just after it reads as done.
func auditOf(t *testing.T, c *client.Client, caller string, n int) []api.AuditEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := c.Audit(context.Background(), client.AuditQuery{Caller: caller})
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) >= n || time.Now().After(deadline) {
			return entries
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func counter(t *testing.T, td *daemontest.Daemon, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := td.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestIdleShutdown(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	ctx := context.Background()

	t.Run("an unused instance stops after its idle period, as policy:idle", func(t *testing.T) {
		clock, hv := newFakeClock(t0), daemontest.NewFakeHypervisor()
		td := startDaemon(t, t.TempDir(), clock, hv)
		req := daemontest.TinyReq("alice-dev")
		req.IdleShutdown = "15m"
		if _, err := td.Create(t, req); err != nil {
			t.Fatal(err)
		}
		clock.step(t, time.Minute) // the first look starts the clock
		for i := 0; i < 14; i++ {
			clock.step(t, time.Minute)
		}
		inst := daemontest.WaitState(t, td.Client, "alice-dev", api.StateRunning)
		if inst.IdleShutdown.Limit != "15m" || !inst.IdleShutdown.Watched || inst.IdleShutdown.IdleSeconds != 14*60 ||
			inst.IdleShutdown.CPUPercent == nil || inst.IdleShutdown.Jobs != 0 || inst.IdleShutdown.SessionsOpen != 0 {
			t.Fatalf("after 14 idle minutes: %+v", inst.IdleShutdown)
		}
		clock.step(t, time.Minute)
		inst = daemontest.WaitState(t, td.Client, "alice-dev", api.StateStopped)
		if !strings.Contains(inst.StateReason, "idle shutdown") {
			t.Errorf("state reason %q does not name the idle shutdown", inst.StateReason)
		}
		stops := policyOps(t, td.Client, policy.ActorIdle)
		if len(stops) != 1 || stops[0].Kind != api.OpStop {
			t.Fatalf("operations by %s: %+v", policy.ActorIdle, stops)
		}
		op, err := td.Client.Wait(ctx, stops[0].ID, nil)
		if err != nil || op.Status != api.OperationSucceeded {
			t.Fatalf("the idle stop: %+v, %v", op, err)
		}
		entries := auditOf(t, td.Client, policy.ActorIdle, 1)
		if len(entries) != 1 || entries[0].Action != "computes/stop/action" || entries[0].Target != "alice-dev" || entries[0].Outcome != "succeeded" {
			t.Errorf("audit of the idle stop: %+v", entries)
		}
		if n := counter(t, td, "labvm_idle_stops_total", nil); n != 1 {
			t.Errorf("labvm_idle_stops_total = %v, want 1", n)
		}
		// Stopped instances are not watched; starting again restarts the clock.
		for i := 0; i < 20; i++ {
			clock.step(t, time.Minute)
		}
		if got := policyOps(t, td.Client, policy.ActorIdle); len(got) != 1 {
			t.Errorf("%d idle stops; a stopped instance was stopped again", len(got))
		}
	})

	t.Run("use resets the clock: a session that moved bytes, CPU over the threshold", func(t *testing.T) {
		clock, hv := newFakeClock(t0), daemontest.NewFakeHypervisor()
		td := startDaemon(t, t.TempDir(), clock, hv)
		req := daemontest.TinyReq("bob-dev")
		req.IdleShutdown = "15m"
		if _, err := td.Create(t, req); err != nil {
			t.Fatal(err)
		}
		inst := daemontest.WaitState(t, td.Client, "bob-dev", api.StateRunning)
		clock.step(t, time.Minute)
		for i := 0; i < 10; i++ {
			clock.step(t, time.Minute)
		}
		// A tunnel moves bytes at minute 11.
		s := td.Policy().Activity.Begin(inst.ID)
		s.Moved()
		for i := 0; i < 10; i++ {
			clock.step(t, time.Minute)
		}
		s.End()
		if got := daemontest.WaitState(t, td.Client, "bob-dev", api.StateRunning); got.IdleShutdown.IdleSeconds != 10*60 {
			t.Fatalf("idle %ds after a session 10 minutes ago", got.IdleShutdown.IdleSeconds)
		}
		// QEMU's own threads busy (10% of a core) while the guest's
		// vCPU idles (1%): that is not use.
		cpu, vcpu := time.Duration(0), time.Duration(0)
		for i := 0; i < 4; i++ {
			cpu += 6 * time.Second
			vcpu += 600 * time.Millisecond
			hv.SetStats(inst.Domain, vm.DomainStats{CPUTime: cpu, VCPUTime: vcpu})
			clock.step(t, time.Minute)
		}
		if got := daemontest.WaitState(t, td.Client, "bob-dev", api.StateRunning); got.IdleShutdown.IdleSeconds != 14*60 {
			t.Fatalf("idle %ds with only QEMU's threads busy, want 840 (%+v)", got.IdleShutdown.IdleSeconds, got.IdleShutdown)
		}
		// Then the guest is busy: 30 s of vCPU per minute on 1 vCPU, 50%.
		for i := 0; i < 20; i++ {
			cpu += 31 * time.Second
			vcpu += 30 * time.Second
			hv.SetStats(inst.Domain, vm.DomainStats{CPUTime: cpu, VCPUTime: vcpu})
			clock.step(t, time.Minute)
		}
		got := daemontest.WaitState(t, td.Client, "bob-dev", api.StateRunning)
		if got.IdleShutdown.CPUPercent == nil || *got.IdleShutdown.CPUPercent < 49 || got.IdleShutdown.IdleSeconds != 0 {
			t.Fatalf("a busy guest: %+v", got.IdleShutdown)
		}
		// Idle again: 15 more minutes stop it.
		for i := 0; i < 15; i++ {
			clock.step(t, time.Minute)
		}
		daemontest.WaitState(t, td.Client, "bob-dev", api.StateStopped)
	})

	t.Run("never during another operation; off means never", func(t *testing.T) {
		clock, hv := newFakeClock(t0), daemontest.NewFakeHypervisor()
		td := startDaemon(t, t.TempDir(), clock, hv)
		for _, name := range []string{"carol-dev", "dave-dev"} {
			if _, err := td.Create(t, daemontest.TinyReq(name)); err != nil {
				t.Fatal(err)
			}
		}
		carol := daemontest.WaitState(t, td.Client, "carol-dev", api.StateRunning)
		if _, err := td.Client.SetIdleShutdown(ctx, "carol-dev", "15m"); err != nil {
			t.Fatal(err)
		}
		hold, err := td.Ops().Begin(api.OpRestart, carol.Name, carol.ID, ops.Who{Name: "test"})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 30; i++ {
			clock.step(t, time.Minute)
		}
		if got := policyOps(t, td.Client, policy.ActorIdle); len(got) != 0 {
			t.Fatalf("the idle policy acted on a busy instance: %+v", got)
		}
		hold.Finish(nil)
		clock.step(t, time.Minute)
		daemontest.WaitState(t, td.Client, "carol-dev", api.StateStopped)
		if got := daemontest.WaitState(t, td.Client, "dave-dev", api.StateRunning); got.IdleShutdown.Limit != "" {
			t.Errorf("dave-dev has no idle shutdown but shows %+v", got.IdleShutdown)
		}
	})

	t.Run("bad values are refused and change nothing", func(t *testing.T) {
		clock, hv := newFakeClock(t0), daemontest.NewFakeHypervisor()
		td := startDaemon(t, t.TempDir(), clock, hv)
		for _, v := range []string{"5m", "4d", "soon", ""} {
			req := daemontest.TinyReq("erin-dev")
			req.IdleShutdown = v
			if v == "" {
				continue
			}
			if _, err := td.Client.CreateInstance(ctx, req); err == nil || !strings.Contains(err.Error(), "idle shutdown") {
				t.Errorf("create with --idle-shutdown %q: %v", v, err)
			}
		}
		if list, _ := td.Client.Instances(ctx); len(list) != 0 {
			t.Fatalf("a refused create left %d instances", len(list))
		}
		req := daemontest.TinyReq("erin-dev")
		req.IdleShutdown = "2h"
		if _, err := td.Create(t, req); err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"14m", "73h", "x", ""} {
			if _, err := td.Client.SetIdleShutdown(ctx, "erin-dev", v); err == nil {
				t.Errorf("idle-shutdown %q accepted", v)
			}
		}
		inst, err := td.Client.SetIdleShutdown(ctx, "erin-dev", "off")
		if err != nil || inst.IdleShutdown.Limit != "" {
			t.Fatalf("off: %+v, %v", inst.IdleShutdown, err)
		}
		inst, err = td.Client.SetIdleShutdown(ctx, "erin-dev", "1d")
		if err != nil || inst.IdleShutdown.Limit != "1d" || inst.IdleShutdown.LimitSeconds != 86400 {
			t.Fatalf("1d: %+v, %v", inst.IdleShutdown, err)
		}
	})
}
