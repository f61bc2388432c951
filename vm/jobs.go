package vm

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// JobState is where a job is in its life. A job is Queued until a slot
// frees on its instance, Starting while the guest agent is asked to run
// it, Running until the guest process ends, then one of the terminal
// states.
type JobState int

const (
	JobQueued JobState = iota
	JobStarting
	JobRunning
	JobSucceeded
	JobFailed
	JobCancelled
	// JobLost means labvm can no longer follow the job; Reason says why.
	JobLost
)

var jobStateNames = [...]string{
	JobQueued:    "Queued",
	JobStarting:  "Starting",
	JobRunning:   "Running",
	JobSucceeded: "Succeeded",
	JobFailed:    "Failed",
	JobCancelled: "Cancelled",
	JobLost:      "Lost",
}

func (s JobState) String() string {
	if s < 0 || int(s) >= len(jobStateNames) {
		return fmt.Sprintf("JobState(%d)", int(s))
	}
	return jobStateNames[s]
}

// ParseJobState is the inverse of String.
func ParseJobState(s string) (JobState, error) {
	for i, n := range jobStateNames {
		if n == s {
			return JobState(i), nil
		}
	}
	return JobQueued, fmt.Errorf("unknown job state %q", s)
}

func (s JobState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *JobState) UnmarshalText(b []byte) error {
	v, err := ParseJobState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Terminal reports whether the job has ended, one way or another.
func (s JobState) Terminal() bool { return s >= JobSucceeded }

// Active reports whether the job holds one of its instance's slots.
func (s JobState) Active() bool { return s == JobStarting || s == JobRunning }

// ErrJobFinished is returned when acting on a job that already ended.
var ErrJobFinished = errors.New("job already finished")

// ErrIllegalJobTransition is a bug guard: a state change the table below
// does not allow.
var ErrIllegalJobTransition = errors.New("illegal job state transition")

// jobTransitions lists, per state, the states a job may move to.
var jobTransitions = map[JobState][]JobState{
	JobQueued:   {JobStarting, JobCancelled, JobLost},
	JobStarting: {JobRunning, JobFailed, JobCancelled, JobLost},
	JobRunning:  {JobSucceeded, JobFailed, JobCancelled, JobLost},
}

// CheckTransition returns nil when a job may move from s to next.
func (s JobState) CheckTransition(next JobState) error {
	for _, ok := range jobTransitions[s] {
		if ok == next {
			return nil
		}
	}
	if s.Terminal() {
		return fmt.Errorf("job is %s: %w", s, ErrJobFinished)
	}
	return fmt.Errorf("job %s → %s: %w", s, next, ErrIllegalJobTransition)
}

// Job is the persisted record of one command run in an instance's guest.
type Job struct {
	// ID is small and per instance: 1, 2, 3…
	ID         int      `json:"id"`
	InstanceID string   `json:"instance_id"`
	Command    []string `json:"command"`
	Submitter  string   `json:"submitter"`
	State      JobState `json:"state"`
	// Reason says why a job failed to start, was cancelled or was lost.
	Reason string `json:"reason,omitempty"`
	// PID is the guest process, as the guest agent knows it.
	PID      int  `json:"pid,omitempty"`
	ExitCode *int `json:"exit_code,omitempty"`
	// Signal killed the process, when it did not exit by itself.
	Signal      int        `json:"signal,omitempty"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	// StdoutSize and StderrSize are the whole streams' sizes, known once
	// the job ended; the store keeps only their last MaxJobOutput bytes.
	StdoutSize int64 `json:"stdout_size,omitempty"`
	StderrSize int64 `json:"stderr_size,omitempty"`
}

// MaxJobOutput is how much of each stream is kept once a job ends: the
// last MiB of stdout and the last MiB of stderr.
const MaxJobOutput = 1 << 20

// Move changes the job's state after checking the transition table, and
// stamps the start and end times.
func (j *Job) Move(next JobState, reason string, now time.Time) error {
	if err := j.State.CheckTransition(next); err != nil {
		return fmt.Errorf("job %d: %w", j.ID, err)
	}
	j.State = next
	if reason != "" {
		j.Reason = reason
	}
	switch {
	case next == JobRunning && j.StartedAt == nil:
		j.StartedAt = &now
	case next.Terminal():
		j.EndedAt = &now
	}
	return nil
}

// Finish records how the guest process ended and moves the job to
// Succeeded or Failed; a job already being cancelled ends Cancelled.
func (j *Job) Finish(exitCode, signal int, cancelReason string, now time.Time) error {
	next, reason := JobSucceeded, ""
	switch {
	case cancelReason != "":
		next, reason = JobCancelled, cancelReason
	case signal != 0:
		next, reason = JobFailed, fmt.Sprintf("killed by signal %d", signal)
	case exitCode != 0:
		next, reason = JobFailed, fmt.Sprintf("exited with code %d", exitCode)
	}
	if err := j.Move(next, reason, now); err != nil {
		return err
	}
	if signal == 0 {
		j.ExitCode = &exitCode
	}
	j.Signal = signal
	return nil
}

// NextToStart is the queue discipline: the oldest queued jobs first
// (FIFO by id), as many as the free slots under limit allow. jobs may be
// in any order and state.
func NextToStart(jobs []Job, limit int) []Job {
	active := 0
	var queued []Job
	for _, j := range jobs {
		switch {
		case j.State.Active():
			active++
		case j.State == JobQueued:
			queued = append(queued, j)
		}
	}
	free := limit - active
	if free <= 0 || len(queued) == 0 {
		return nil
	}
	sort.Slice(queued, func(a, b int) bool { return queued[a].ID < queued[b].ID })
	return queued[:min(free, len(queued))]
}

// JobLimit is how many jobs an instance runs at once: the limit set for
// it, or its vCPU count when none is set (0).
func JobLimit(set int, inst Instance) int {
	if set > 0 {
		return set
	}
	return max(1, inst.Size.VCPUs)
}

// MaxJobParallel bounds the per-instance limit users may set.
const MaxJobParallel = 64
