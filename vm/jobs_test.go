package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestJobStateText(t *testing.T) {
	for s := JobQueued; s <= JobLost; s++ {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back JobState
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Fatalf("%s: round trip gave %v, %v", s, back, err)
		}
	}
	var s JobState
	if err := json.Unmarshal([]byte(`"Exploded"`), &s); err == nil {
		t.Fatal("unknown state decoded")
	}
	if got := JobState(99).String(); got != "JobState(99)" {
		t.Fatalf("String of an out-of-range state = %q", got)
	}
}

func TestJobTransitions(t *testing.T) {
	all := []JobState{JobQueued, JobStarting, JobRunning, JobSucceeded, JobFailed, JobCancelled, JobLost}
	legal := map[[2]JobState]bool{}
	for from, tos := range jobTransitions {
		for _, to := range tos {
			legal[[2]JobState{from, to}] = true
		}
	}
	for _, from := range all {
		for _, to := range all {
			err := from.CheckTransition(to)
			switch {
			case legal[[2]JobState{from, to}] && err != nil:
				t.Errorf("%s → %s refused: %v", from, to, err)
			case !legal[[2]JobState{from, to}] && err == nil:
				t.Errorf("%s → %s allowed", from, to)
			case from.Terminal() && !errors.Is(err, ErrJobFinished):
				t.Errorf("%s → %s: %v, want ErrJobFinished", from, to, err)
			}
		}
	}
}

func TestJobFinish(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name         string
		exit, signal int
		cancel       string
		want         JobState
		wantReason   string
		wantExit     *int
	}{
		{"success", 0, 0, "", JobSucceeded, "", ptr(0)},
		{"exit code", 3, 0, "", JobFailed, "exited with code 3", ptr(3)},
		{"signal", 0, 9, "", JobFailed, "killed by signal 9", nil},
		{"cancelled", 0, 15, "cancelled by alice", JobCancelled, "cancelled by alice", nil},
		{"cancelled but exited", 0, 0, "instance stopped", JobCancelled, "instance stopped", ptr(0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := Job{ID: 1, State: JobQueued}
			if err := j.Move(JobStarting, "", now); err != nil {
				t.Fatal(err)
			}
			if err := j.Move(JobRunning, "", now); err != nil || j.StartedAt == nil {
				t.Fatalf("start: %v %+v", err, j)
			}
			if err := j.Finish(tt.exit, tt.signal, tt.cancel, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if j.State != tt.want || j.Reason != tt.wantReason || fmt.Sprint(deref(j.ExitCode)) != fmt.Sprint(deref(tt.wantExit)) || j.EndedAt == nil {
				t.Fatalf("job = %+v", j)
			}
			if err := j.Finish(0, 0, "", now); !errors.Is(err, ErrJobFinished) {
				t.Fatalf("second finish: %v", err)
			}
		})
	}
}

func ptr(i int) *int { return &i }

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestNextToStart(t *testing.T) {
	q := func(id int, s JobState) Job { return Job{ID: id, State: s} }
	tests := []struct {
		name  string
		jobs  []Job
		limit int
		want  []int
	}{
		{"empty", nil, 2, nil},
		{"fills free slots in id order", []Job{q(3, JobQueued), q(1, JobQueued), q(2, JobQueued)}, 2, []int{1, 2}},
		{"running jobs take slots", []Job{q(1, JobRunning), q(2, JobQueued), q(3, JobQueued)}, 2, []int{2}},
		{"starting jobs take slots", []Job{q(1, JobStarting), q(2, JobRunning), q(3, JobQueued)}, 2, nil},
		{"finished jobs do not", []Job{q(1, JobSucceeded), q(2, JobFailed), q(3, JobCancelled), q(4, JobLost), q(5, JobQueued)}, 1, []int{5}},
		{"limit lowered below running", []Job{q(1, JobRunning), q(2, JobRunning), q(3, JobQueued)}, 1, nil},
		{"limit above queue", []Job{q(7, JobQueued)}, 8, []int{7}},
		{"zero limit", []Job{q(1, JobQueued)}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			for _, j := range NextToStart(tt.jobs, tt.limit) {
				got = append(got, j.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestJobLimit(t *testing.T) {
	inst := Instance{Size: Size{VCPUs: 4}}
	tests := []struct {
		set  int
		inst Instance
		want int
	}{
		{0, inst, 4},
		{2, inst, 2},
		{9, inst, 9},
		{0, Instance{}, 1},
	}
	for _, tt := range tests {
		if got := JobLimit(tt.set, tt.inst); got != tt.want {
			t.Errorf("JobLimit(%d, %d vCPU) = %d, want %d", tt.set, tt.inst.Size.VCPUs, got, tt.want)
		}
	}
}
