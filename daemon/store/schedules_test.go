package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
)

// TestSchedulesSurviveReopen: schedules and their last run are kept
// across a restart (the database closed and opened again), ids are never
// reused, and an instance's go with it.
func TestSchedulesSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "labvm.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)
	uid := 1500
	var made []Schedule
	for _, inst := range []string{"aaaa", "bbbb", "aaaa"} {
		if err := s.Update(func(tx *Tx) error {
			sc, err := tx.CreateSchedule(Schedule{InstanceID: inst, Stop: "0 19 * * 1-5", Start: "0 8 * * 1-5", Timezone: "Europe/Lisbon",
				CreatedBy: "alice", CreatedByUID: &uid, CreatedAt: now, CheckedUntil: now})
			made = append(made, sc)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if made[0].ID != 1 || made[1].ID != 2 || made[2].ID != 3 {
		t.Fatalf("ids %d %d %d, want 1 2 3", made[0].ID, made[1].ID, made[2].ID)
	}
	run := ScheduleRun{Action: "stop", At: now, RanAt: now.Add(time.Second), Operation: "op1", Missed: true}
	made[0].Last, made[0].CheckedUntil = &run, now.Add(time.Second)
	if err := s.Update(func(tx *Tx) error { return tx.PutSchedule(made[0]) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var got []Schedule
	if err := s.View(func(tx *Tx) error { got, err = tx.Schedules(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Last == nil || *got[0].Last != run || !got[0].CheckedUntil.Equal(now.Add(time.Second)) ||
		got[0].Timezone != "Europe/Lisbon" || *got[0].CreatedByUID != uid {
		t.Fatalf("after reopen: %+v", got)
	}
	if err := s.Update(func(tx *Tx) error { return tx.DeleteSchedulesOf("aaaa") }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.DeleteSchedule(1) }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a schedule already gone: %v, want ErrNotFound", err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.PutSchedule(made[0]) }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("put of a removed schedule: %v, want ErrNotFound", err)
	}
	var next Schedule
	if err := s.Update(func(tx *Tx) error { next, err = tx.CreateSchedule(Schedule{InstanceID: "cccc"}); return err }); err != nil {
		t.Fatal(err)
	}
	if next.ID != 4 {
		t.Fatalf("a new schedule got id %d; ids must never be reused", next.ID)
	}
	if err := s.View(func(tx *Tx) error { got, err = tx.Schedules(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].InstanceID != "bbbb" || got[1].ID != 4 {
		t.Fatalf("left: %+v", got)
	}
}

// TestPutInstanceKeepsPolicy: an operation writing the record it read
// before the policy changed does not undo the change.
func TestPutInstanceKeepsPolicy(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "labvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	inst := vm.Instance{ID: "aaaa", Name: "alice-dev", State: vm.StateRunning}
	if err := s.Update(func(tx *Tx) error { return tx.CreateInstance(inst) }); err != nil {
		t.Fatal(err)
	}
	stale := inst // an operation's copy
	if err := s.Update(func(tx *Tx) error {
		_, err := tx.SetPolicy(inst.ID, vm.Policy{IdleShutdown: 30 * time.Minute})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	stale.State = vm.StateStopped
	if err := s.Update(func(tx *Tx) error { return tx.PutInstance(stale) }); err != nil {
		t.Fatal(err)
	}
	for _, read := range []func(tx *Tx) (vm.Instance, error){
		func(tx *Tx) (vm.Instance, error) { return tx.Instance(inst.ID) },
		func(tx *Tx) (vm.Instance, error) { l, err := tx.Instances(); return l[0], err }, // the cache
	} {
		var got vm.Instance
		if err := s.View(func(tx *Tx) error { got, err = read(tx); return err }); err != nil {
			t.Fatal(err)
		}
		if got.State != vm.StateStopped || got.Policy.IdleShutdown != 30*time.Minute {
			t.Fatalf("state %s, idle shutdown %s; want Stopped and 30m kept", got.State, got.Policy.IdleShutdown)
		}
	}
	if err := s.Update(func(tx *Tx) error { _, err := tx.SetPolicy("nope", vm.Policy{}); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetPolicy of a missing instance: %v", err)
	}
}
