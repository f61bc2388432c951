package api

import "time"

// IdleShutdown is an instance's idle shutdown and, while it runs, its
// idle clock.
type IdleShutdown struct {
	// Limit is the idle period after which it is stopped ("30m", "2h");
	// empty when the idle shutdown is off.
	Limit        string `json:"limit,omitempty"`
	LimitSeconds int64  `json:"limit_seconds"`
	// Watched is true while the instance runs under its idle clock; the
	// fields below are what the latest look found.
	Watched     bool  `json:"watched"`
	IdleSeconds int64 `json:"idle_seconds"`
	// SessionsOpen are the guest sessions open through labvmd now;
	// LastSessionAt is when one last moved bytes.
	SessionsOpen  int        `json:"sessions_open"`
	LastSessionAt *time.Time `json:"last_session_at,omitempty"`
	// Jobs are running or queued.
	Jobs int `json:"jobs"`
	// CPUPercent is the guest's CPU use over the latest sample, in
	// percent of its vCPUs; absent until measured.
	CPUPercent *float64 `json:"cpu_percent,omitempty"`
}

// SetIdleShutdownRequest sets or clears an instance's idle shutdown.
type SetIdleShutdownRequest struct {
	// IdleShutdown is a duration such as "30m", "2h" or "1d", or "off".
	IdleShutdown string `json:"idle_shutdown"`
}

// CreateScheduleRequest adds a start/stop schedule to an instance.
type CreateScheduleRequest struct {
	// Stop and Start are cron expressions (five fields); at least one.
	Stop  string `json:"stop,omitempty"`
	Start string `json:"start,omitempty"`
	// Timezone is an IANA zone name, e.g. Europe/Lisbon or UTC.
	Timezone string `json:"timezone"`
}

// Schedule starts and stops an instance at the times of cron
// expressions in a time zone.
type Schedule struct {
	ID        int          `json:"id"`
	Instance  string       `json:"instance"`
	Stop      string       `json:"stop,omitempty"`
	Start     string       `json:"start,omitempty"`
	Timezone  string       `json:"timezone"`
	CreatedBy string       `json:"created_by"`
	CreatedAt time.Time    `json:"created_at"`
	Next      *ScheduleRun `json:"next,omitempty"`
	Last      *ScheduleRun `json:"last,omitempty"`
}

// ScheduleRun is a time a schedule comes (Next) or came (Last) due.
type ScheduleRun struct {
	// Action is "start" or "stop"; At the scheduled time.
	Action string     `json:"action"`
	At     time.Time  `json:"at"`
	RanAt  *time.Time `json:"ran_at,omitempty"`
	// Operation is the operation it began; Skipped says why it did
	// nothing instead (already there, busy).
	Operation string `json:"operation,omitempty"`
	Skipped   string `json:"skipped,omitempty"`
	// Missed: the time passed while labvmd was down, and the action was
	// applied when it came back.
	Missed bool `json:"missed,omitempty"`
}
