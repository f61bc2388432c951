package main

import (
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

func TestStateText(t *testing.T) {
	tests := []struct {
		running, queued int
		want            string
	}{
		{0, 0, string(api.StateRunning)},
		{1, 0, "Running (1 job)"},
		{2, 0, "Running (2 jobs)"},
		{2, 3, "Running (2 jobs, 3 queued)"},
		{0, 1, "Running (1 queued)"},
	}
	for _, tt := range tests {
		if got := stateText(api.Instance{State: api.StateRunning, JobsRunning: tt.running, JobsQueued: tt.queued}); got != tt.want {
			t.Errorf("%d running, %d queued: %q, want %q", tt.running, tt.queued, got, tt.want)
		}
	}
}

func TestJobColumns(t *testing.T) {
	three, start := 3, time.Now().Add(-time.Minute)
	end := start.Add(1500 * time.Millisecond)
	tests := []struct {
		job        api.Job
		exit, took string
	}{
		{api.Job{State: api.JobQueued}, "-", "-"},
		{api.Job{State: api.JobFailed, ExitCode: &three, StartedAt: &start, EndedAt: &end}, "3", "1.5s"},
		{api.Job{State: api.JobCancelled, Signal: 15, StartedAt: &start, EndedAt: &end}, "signal 15", "1.5s"},
	}
	for _, tt := range tests {
		if got := exitText(tt.job); got != tt.exit {
			t.Errorf("exitText(%+v) = %q, want %q", tt.job, got, tt.exit)
		}
		if got := tookText(tt.job); got != tt.took {
			t.Errorf("tookText(%+v) = %q, want %q", tt.job, got, tt.took)
		}
	}
}

func TestParseJobID(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{{"7", true}, {"0", false}, {"-1", false}, {"seven", false}, {"", false}} {
		if _, err := parseJobID(tt.in); (err == nil) != tt.ok {
			t.Errorf("parseJobID(%q) = %v", tt.in, err)
		}
	}
}
