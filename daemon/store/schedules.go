package store

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Schedule starts and stops one instance at the times of two cron
// expressions, in a time zone. Schedules live in the "schedules" bucket
// keyed by their id (8 bytes big-endian), handed out by the bucket's
// sequence, so ids are never reused.
type Schedule struct {
	ID         int    `json:"id"`
	InstanceID string `json:"instance_id"`
	// Stop and Start are cron expressions (either may be empty, not both).
	Stop  string `json:"stop,omitempty"`
	Start string `json:"start,omitempty"`
	// Timezone is an IANA zone name from the host's zoneinfo.
	Timezone     string    `json:"timezone"`
	CreatedBy    string    `json:"created_by"`
	CreatedByUID *int      `json:"created_by_uid,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	// CheckedUntil is the time up to which the schedule's times have been
	// acted on: the next action is the latest of its times after it. A
	// daemon that was down finds the times it missed between this and now.
	CheckedUntil time.Time `json:"checked_until"`
	// Last is the latest action taken or skipped, if any.
	Last *ScheduleRun `json:"last,omitempty"`
}

// ScheduleRun is one time a schedule came due.
type ScheduleRun struct {
	// Action is "start" or "stop"; At is the scheduled time it was for.
	Action string    `json:"action"`
	At     time.Time `json:"at"`
	RanAt  time.Time `json:"ran_at"`
	// Operation is the operation it started; empty when it was skipped,
	// and Skipped then says why.
	Operation string `json:"operation,omitempty"`
	Skipped   string `json:"skipped,omitempty"`
	// Missed is set when the time passed while labvmd was down.
	Missed bool `json:"missed,omitempty"`
}

func scheduleKey(id int) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(id))
	return k
}

// CreateSchedule stores a new schedule and returns it with its id.
func (t *Tx) CreateSchedule(s Schedule) (Schedule, error) {
	b := t.tx.Bucket(bucketSchedules)
	seq, err := b.NextSequence()
	if err != nil {
		return s, err
	}
	s.ID = int(seq)
	return s, put(t, bucketSchedules, scheduleKey(s.ID), s)
}

// PutSchedule updates an existing schedule.
func (t *Tx) PutSchedule(s Schedule) error {
	if t.tx.Bucket(bucketSchedules).Get(scheduleKey(s.ID)) == nil {
		return fmt.Errorf("schedule %d: %w", s.ID, ErrNotFound)
	}
	return put(t, bucketSchedules, scheduleKey(s.ID), s)
}

// Schedule returns one schedule.
func (t *Tx) Schedule(id int) (Schedule, error) {
	return get[Schedule](t, bucketSchedules, scheduleKey(id))
}

// Schedules lists every schedule, by id.
func (t *Tx) Schedules() ([]Schedule, error) {
	return list[Schedule](t, bucketSchedules)
}

// DeleteSchedule removes one schedule.
func (t *Tx) DeleteSchedule(id int) error {
	b := t.tx.Bucket(bucketSchedules)
	if b.Get(scheduleKey(id)) == nil {
		return fmt.Errorf("schedule %d: %w", id, ErrNotFound)
	}
	return b.Delete(scheduleKey(id))
}

// DeleteSchedulesOf removes an instance's schedules (it is being deleted).
func (t *Tx) DeleteSchedulesOf(instanceID string) error {
	all, err := t.Schedules()
	if err != nil {
		return err
	}
	for _, s := range all {
		if s.InstanceID == instanceID {
			if err := t.tx.Bucket(bucketSchedules).Delete(scheduleKey(s.ID)); err != nil {
				return err
			}
		}
	}
	return nil
}
