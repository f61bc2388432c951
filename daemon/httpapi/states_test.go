package httpapi

import (
	"slices"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/jobs"
	"github.com/labvm/labvm/vm"
)

// TestEveryStateHasAnAPIConstant: each state of the model reaches the wire
// as a constant package api declares, spelled the same, so clients that
// compare against api.StateRunning and friends never miss a state.
func TestEveryStateHasAnAPIConstant(t *testing.T) {
	var seen []api.InstanceState
	for s := vm.State(0); !strings.HasPrefix(s.String(), "State("); s++ {
		got := apiState(s)
		if string(got) != s.String() {
			t.Errorf("vm.%s goes on the wire as %q", s, got)
		}
		if !slices.Contains(api.InstanceStates, got) {
			t.Errorf("vm.%s has no constant in api.InstanceStates", s)
		}
		seen = append(seen, got)
	}
	for _, s := range api.InstanceStates {
		if !slices.Contains(seen, s) {
			t.Errorf("api.InstanceStates has %q, which no vm.State is", s)
		}
	}
	if len(seen) < 10 {
		t.Fatalf("walked only %d vm states: %v", len(seen), seen)
	}
}

func TestEveryJobStateHasAnAPIConstant(t *testing.T) {
	var seen []api.JobState
	for s := vm.JobState(0); !strings.HasPrefix(s.String(), "JobState("); s++ {
		got := jobs.Wire(vm.Instance{}, vm.Job{State: s}).State
		if string(got) != s.String() {
			t.Errorf("vm job state %s goes on the wire as %q", s, got)
		}
		if !slices.Contains(api.JobStates, got) {
			t.Errorf("vm job state %s has no constant in api.JobStates", s)
		}
		if api.JobEnded(got) != s.Terminal() {
			t.Errorf("api.JobEnded(%s) = %v, but vm says terminal = %v", got, api.JobEnded(got), s.Terminal())
		}
		seen = append(seen, got)
	}
	for _, s := range api.JobStates {
		if !slices.Contains(seen, s) {
			t.Errorf("api.JobStates has %q, which no vm.JobState is", s)
		}
	}
	if len(seen) < 7 {
		t.Fatalf("walked only %d job states: %v", len(seen), seen)
	}
}
