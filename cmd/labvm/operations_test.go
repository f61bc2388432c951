package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
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

// TestOperationsOfOneInstance runs `labvm operations --instance` against
// a daemon: only that instance's operations, as JSON and as a table, and
// a clear refusal for an instance that does not exist.
func TestOperationsOfOneInstance(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	for _, name := range []string{"one-dev", "two-dev"} {
		if _, err := td.Create(t, daemontest.TinyReq(name)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		a := &app{stdout: &out, stderr: &errb, stdin: strings.NewReader("")}
		root := newRootCommand(a)
		root.SetArgs(append([]string{"--socket", td.Cfg.SocketPath}, args...))
		code := report(&errb, root.ExecuteContext(t.Context()))
		return out.String(), errb.String(), code
	}
	out, errs, code := run("operations", "--instance", "one-dev", "-o", "json")
	var ops []api.Operation
	if code != 0 || json.Unmarshal([]byte(out), &ops) != nil {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	if len(ops) != 1 || ops[0].Target != "one-dev" || ops[0].Kind != api.OpCreate {
		t.Fatalf("operations of one-dev: %+v", ops)
	}
	out, _, code = run("ops", "--instance", "two-dev")
	if code != 0 || !strings.Contains(out, "two-dev") || strings.Contains(out, "one-dev") {
		t.Fatalf("exit %d, table:\n%s", code, out)
	}
	_, errs, code = run("operations", "--instance", "nope-dev")
	if code != 1 || !strings.Contains(errs, `instance "nope-dev" not found`) {
		t.Fatalf("unknown instance: exit %d, %q", code, errs)
	}
}
