package main

import (
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

func TestEventLine(t *testing.T) {
	now := time.Date(2026, 11, 29, 19, 30, 5, 0, time.UTC)
	stage := api.Stage{Name: "Booting"}
	tests := []struct {
		name string
		ev   api.Event
		want string
	}{
		{"operation", api.Event{Operation: &api.Operation{ID: "0123456789abcdef", Kind: api.OpStart, Target: "web", Status: api.OperationRunning, Stages: []api.Stage{stage}}},
			"19:30:05  01234567 start         web                  running    Booting"},
		{"failed operation", api.Event{Operation: &api.Operation{ID: "0123456789abcdef", Kind: api.OpStart, Target: "web", Status: api.OperationFailed,
			Stages: []api.Stage{stage}, Error: &api.Error{Message: "no guest agent"}}},
			"19:30:05  01234567 start         web                  failed     no guest agent"},
		{"state without an operation", api.Event{Instance: &api.InstanceEvent{Name: "web", Previous: api.StateRunning, State: api.StateStopped, StateReason: "domain gone"}},
			"19:30:05           instance      web                  Running → Stopped  domain gone"},
		{"created", api.Event{Instance: &api.InstanceEvent{Name: "web", State: api.StateCreating}},
			"19:30:05           instance      web                  Creating"},
		{"deleted", api.Event{Instance: &api.InstanceEvent{Name: "web", Previous: api.StateDeleting, Gone: true}},
			"19:30:05           instance      web                  deleted"},
	}
	for _, tt := range tests {
		if got := eventLine(now, tt.ev); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}
