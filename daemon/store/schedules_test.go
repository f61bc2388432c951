package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
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
