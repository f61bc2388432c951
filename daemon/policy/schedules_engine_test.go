package policy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/policy"
	"github.com/labvm/labvm/daemon/store"
)

func schedules(t *testing.T, c *client.Client, name string) []api.Schedule {
	t.Helper()
	list, err := c.Schedules(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// waitLast waits until the schedule has a last run at the given time.
func waitLast(t *testing.T, c *client.Client, name string, at time.Time) api.Schedule {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list := schedules(t, c, name)
		if len(list) == 1 && list[0].Last != nil && list[0].Last.At.Equal(at) {
			return list[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("schedules of %s: %+v; want a last run at %s", name, list, at)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSchedules: a weekday schedule in Lisbon stops and starts an
// instance, skips (and says why) when it is already there, survives a
// restart, and applies the action it missed while labvmd was down once.
func TestSchedules(t *testing.T) {
	lisbon, err := time.LoadLocation("Europe/Lisbon")
	if err != nil {
		t.Skipf("no zoneinfo: %v", err)
	}
	ctx := context.Background()
	// Monday 30 November 2026, 18:00 in Lisbon (WET, UTC+0).
	t0 := time.Date(2026, 11, 30, 18, 0, 0, 0, lisbon)
	dir := t.TempDir()
	clock, hv := newFakeClock(t0), daemontest.NewFakeHypervisor()
	td := startDaemon(t, dir, clock, hv)
	if _, err := td.Create(t, daemontest.TinyReq("alice-dev")); err != nil {
		t.Fatal(err)
	}

	t.Run("bad schedules are refused and nothing is stored", func(t *testing.T) {
		for _, tc := range []struct {
			req  api.CreateScheduleRequest
			want string
		}{
			{api.CreateScheduleRequest{Stop: "0 19 * * 1-5", Timezone: "Mars/Olympus"}, "unknown time zone"},
			{api.CreateScheduleRequest{Stop: "0 25 * * *", Timezone: "UTC"}, "cron expression"},
			{api.CreateScheduleRequest{Stop: "0 19 * * 1-5"}, "--timezone is required"},
			{api.CreateScheduleRequest{Timezone: "UTC"}, "needs --stop, --start or both"},
			{api.CreateScheduleRequest{Start: "@every 1h", Timezone: "UTC"}, "@every"},
		} {
			_, err := td.Client.AddSchedule(ctx, "alice-dev", tc.req)
			if ae, ok := err.(*api.Error); !ok || ae.Code != api.CodeInvalidArgument || !strings.Contains(ae.Message, tc.want) {
				t.Errorf("%+v: %v; want InvalidArgument saying %q", tc.req, err, tc.want)
			}
		}
		if _, err := td.Client.AddSchedule(ctx, "nobody-dev", api.CreateScheduleRequest{Stop: "@daily", Timezone: "UTC"}); err == nil {
			t.Error("a schedule for an instance that does not exist was accepted")
		}
		if list := schedules(t, td.Client, ""); len(list) != 0 {
			t.Fatalf("refused schedules left %+v", list)
		}
	})

	sc, err := td.Client.AddSchedule(ctx, "alice-dev", api.CreateScheduleRequest{Stop: "0 19 * * 1-5", Start: "0 8 * * 1-5", Timezone: "Europe/Lisbon"})
	if err != nil {
		t.Fatal(err)
	}
	if sc.ID != 1 || sc.Next == nil || sc.Next.Action != policy.ActionStop || !sc.Next.At.Equal(t0.Add(time.Hour)) {
		t.Fatalf("added: %+v (next %+v)", sc, sc.Next)
	}
	clock.waitArmed(t, 2) // the loop re-armed for the new schedule

	t.Run("it stops the instance at 19:00, as policy:schedule", func(t *testing.T) {
		clock.step(t, 59*time.Minute)
		if len(policyOps(t, td.Client, policy.ActorSchedule)) != 0 {
			t.Fatal("acted before 19:00")
		}
		clock.step(t, time.Minute)
		got := waitLast(t, td.Client, "alice-dev", t0.Add(time.Hour))
		if got.Last.Action != policy.ActionStop || got.Last.Operation == "" || got.Last.Skipped != "" || got.Last.Missed {
			t.Fatalf("last run: %+v", got.Last)
		}
		daemontest.WaitState(t, td.Client, "alice-dev", api.StateStopped)
		list := policyOps(t, td.Client, policy.ActorSchedule)
		if len(list) != 1 || list[0].Kind != api.OpStop || list[0].ID != got.Last.Operation {
			t.Fatalf("operations by %s: %+v", policy.ActorSchedule, list)
		}
		if op, err := td.Client.Wait(ctx, list[0].ID, nil); err != nil || op.Status != api.OperationSucceeded {
			t.Fatalf("the scheduled stop: %+v, %v", op, err)
		}
		if n := counter(t, td, "labvm_schedule_actions_total", map[string]string{"action": "stop", "outcome": "started"}); n != 1 {
			t.Errorf("labvm_schedule_actions_total{stop,started} = %v", n)
		}
	})

	t.Run("a stop that finds it already stopped does nothing and says why", func(t *testing.T) {
		// Tuesday 19:00 after a Tuesday 08:00 start: stop it by hand
		// before 19:00.
		clock.set(time.Date(2026, 12, 1, 8, 0, 0, 0, lisbon))
		clock.waitArmed(t, 2)
		got := waitLast(t, td.Client, "alice-dev", time.Date(2026, 12, 1, 8, 0, 0, 0, lisbon))
		if got.Last.Operation == "" {
			t.Fatalf("the 08:00 start: %+v", got.Last)
		}
		if op, err := td.Client.Wait(ctx, got.Last.Operation, nil); err != nil || op.Status != api.OperationSucceeded {
			t.Fatalf("the scheduled start: %+v, %v", op, err)
		}
		op, err := td.Client.Stop(ctx, "alice-dev")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := td.Client.Wait(ctx, op.ID, nil); err != nil {
			t.Fatal(err)
		}
		at := time.Date(2026, 12, 1, 19, 0, 0, 0, lisbon)
		clock.set(at)
		clock.waitArmed(t, 2)
		got = waitLast(t, td.Client, "alice-dev", at)
		if got.Last.Skipped != "already Stopped" || got.Last.Operation != "" {
			t.Fatalf("last run: %+v", got.Last)
		}
		entries := auditOf(t, td.Client, policy.ActorSchedule, 3)
		last := entries[len(entries)-1]
		if last.Outcome != "skipped" || !strings.Contains(last.Message, "already Stopped") {
			t.Errorf("audit of the skip: %+v", last)
		}
		if n := len(policyOps(t, td.Client, policy.ActorSchedule)); n != 2 {
			t.Errorf("%d operations by the schedule, want 2 (a stop and a start)", n)
		}
	})

	t.Run("kept across a restart; the start missed while down is applied once", func(t *testing.T) {
		if err := td.Stop(); err != nil {
			t.Fatal(err)
		}
		// Down from Tuesday 19:00 to Wednesday 09:30: Wednesday's 08:00
		// start was missed.
		clock2 := newFakeClock(time.Date(2026, 12, 2, 9, 30, 0, 0, lisbon))
		td2 := startDaemon(t, dir, clock2, hv)
		missed := time.Date(2026, 12, 2, 8, 0, 0, 0, lisbon)
		got := waitLast(t, td2.Client, "alice-dev", missed)
		if got.Last.Action != policy.ActionStart || !got.Last.Missed || got.Last.Operation == "" {
			t.Fatalf("after the restart: %+v", got.Last)
		}
		daemontest.WaitState(t, td2.Client, "alice-dev", api.StateRunning)
		// More looks change nothing until 19:00.
		for i := 0; i < 5; i++ {
			clock2.step(t, time.Minute)
		}
		after := 0
		for _, op := range policyOps(t, td2.Client, policy.ActorSchedule) {
			if op.Kind == api.OpStart {
				after++
			}
		}
		if after != 2 {
			t.Errorf("%d starts by the schedule, want 2 (Tuesday's and the missed Wednesday's, once)", after)
		}
		if err := td2.Client.RemoveSchedule(ctx, "alice-dev", 1); err != nil {
			t.Fatal(err)
		}
		if err := td2.Client.RemoveSchedule(ctx, "alice-dev", 1); err == nil {
			t.Error("removing a removed schedule succeeded")
		}
		if list := schedules(t, td2.Client, "alice-dev"); len(list) != 0 {
			t.Fatalf("after remove: %+v", list)
		}
	})
}

// TestScheduleSkipsABusyInstance: a time that comes due while another
// operation holds the instance does nothing, says so, and is not tried
// again later.
func TestScheduleSkipsABusyInstance(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	clock, hv := newFakeClock(t0), daemontest.NewFakeHypervisor()
	td := startDaemon(t, t.TempDir(), clock, hv)
	if _, err := td.Create(t, daemontest.TinyReq("alice-dev")); err != nil {
		t.Fatal(err)
	}
	inst, err := td.Lifecycle().InstanceByName("alice-dev")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := td.Client.AddSchedule(ctx, "alice-dev", api.CreateScheduleRequest{Stop: "0 19 * * *", Timezone: "UTC"}); err != nil {
		t.Fatal(err)
	}
	clock.waitArmed(t, 2)
	hold, err := td.Ops().Begin(api.OpRestart, inst.Name, inst.ID, ops.Who{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	clock.step(t, time.Hour)
	got := waitLast(t, td.Client, "alice-dev", t0.Add(time.Hour))
	if !strings.HasPrefix(got.Last.Skipped, "busy with operation "+hold.ID()) || got.Last.Operation != "" {
		t.Fatalf("last run: %+v", got.Last)
	}
	hold.Finish(nil)
	clock.step(t, 30*time.Minute)
	if n := len(policyOps(t, td.Client, policy.ActorSchedule)); n != 0 {
		t.Fatalf("%d operations by the schedule; a skipped time is not tried again", n)
	}
	if n := counter(t, td, "labvm_schedule_actions_total", map[string]string{"action": "stop", "outcome": "skipped"}); n != 1 {
		t.Errorf("labvm_schedule_actions_total{stop,skipped} = %v", n)
	}
	// Deleting the instance deletes its schedules.
	op, err := td.Client.Delete(ctx, "alice-dev")
	if err != nil {
		t.Fatal(err)
	}
	if op, err := td.Client.Wait(ctx, op.ID, nil); err != nil || op.Status != api.OperationSucceeded {
		t.Fatalf("delete: %+v, %v", op, err)
	}
	var left int
	if err := td.Store().View(func(tx *store.Tx) error {
		all, err := tx.Schedules()
		left = len(all)
		return err
	}); err != nil || left != 0 {
		t.Fatalf("%d schedules left after the instance was deleted (%v)", left, err)
	}
}

// TestIdleShutdownHostDefault: creates without --idle-shutdown get the
// host's default; "off" opts out.
func TestIdleShutdownHostDefault(t *testing.T) {
	clock, hv := newFakeClock(time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)), daemontest.NewFakeHypervisor()
	td := daemontest.NewAtWith(t, t.TempDir(), hv, daemon.Options{PolicyClock: clock}, func(c *daemon.Config) {
		c.IdleDefault = 2 * time.Hour
		c.IdleMaximum = 24 * time.Hour
	}, nil)
	if _, err := td.Create(t, daemontest.TinyReq("alice-dev")); err != nil {
		t.Fatal(err)
	}
	off := daemontest.TinyReq("bob-dev")
	off.IdleShutdown = "off"
	if _, err := td.Create(t, off); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"alice-dev": "2h", "bob-dev": ""} {
		inst, err := td.Client.Instance(context.Background(), name)
		if err != nil || inst.IdleShutdown.Limit != want {
			t.Errorf("%s: idle shutdown %q, %v; want %q", name, inst.IdleShutdown.Limit, err, want)
		}
	}
	if _, err := td.Client.SetIdleShutdown(context.Background(), "bob-dev", "2d"); err == nil || !strings.Contains(err.Error(), "at most 1d") {
		t.Errorf("above the host's maximum: %v", err)
	}
}
