package vm

import (
	"errors"
	"fmt"
)

// State is where an instance is in its life. Stable states are the ones an
// instance can rest in with no operation running; transitional states exist
// only while an operation holds the instance.
type State int

const (
	StateUnknown State = iota
	StateCreating
	StateSettingUp
	StateRunning
	StateStopping
	StateStopped
	StateStarting
	StateRestarting
	StateDeleting
	StateCreateFailed
	StateSetupFailed
)

var stateNames = [...]string{
	StateUnknown:      "Unknown",
	StateCreating:     "Creating",
	StateSettingUp:    "SettingUp",
	StateRunning:      "Running",
	StateStopping:     "Stopping",
	StateStopped:      "Stopped",
	StateStarting:     "Starting",
	StateRestarting:   "Restarting",
	StateDeleting:     "Deleting",
	StateCreateFailed: "CreateFailed",
	StateSetupFailed:  "SetupFailed",
}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int(s))
	}
	return stateNames[s]
}

// States lists every state in order, for those who report a count of
// each (the metrics report zeros rather than leave a state out).
func States() []State {
	out := make([]State, len(stateNames))
	for i := range out {
		out[i] = State(i)
	}
	return out
}

// ParseState is the inverse of String.
func ParseState(s string) (State, error) {
	for i, n := range stateNames {
		if n == s {
			return State(i), nil
		}
	}
	return StateUnknown, fmt.Errorf("unknown instance state %q", s)
}

func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *State) UnmarshalText(b []byte) error {
	v, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Transitional reports whether the state only exists while an operation is
// running. Finding an instance in one at daemon start means the daemon died
// mid-operation and reconcile must finish or roll it back.
func (s State) Transitional() bool {
	switch s {
	case StateCreating, StateSettingUp, StateStopping, StateStarting, StateRestarting, StateDeleting:
		return true
	}
	return false
}

// Action is something a caller asks of an existing instance.
type Action int

const (
	ActionStart Action = iota + 1
	ActionStop
	ActionRestart
	ActionDelete
	// ActionAccess covers exec, tunnels and jobs: things that need a guest.
	ActionAccess
)

func (a Action) String() string {
	switch a {
	case ActionStart:
		return "start"
	case ActionStop:
		return "stop"
	case ActionRestart:
		return "restart"
	case ActionDelete:
		return "delete"
	case ActionAccess:
		return "access"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// ErrIllegalTransition is returned when an action is not allowed from the
// instance's current state. The API maps it to 409 Conflict.
var ErrIllegalTransition = errors.New("illegal state transition")

// allowedFrom lists, per action, the stable states it may start from. Any
// transitional state is excluded on purpose: it means another operation
// owns the instance.
var allowedFrom = map[Action][]State{
	ActionStart:   {StateStopped},
	ActionStop:    {StateRunning, StateSetupFailed, StateUnknown},
	ActionRestart: {StateRunning, StateSetupFailed},
	ActionDelete:  {StateRunning, StateStopped, StateCreateFailed, StateSetupFailed, StateUnknown},
	ActionAccess:  {StateRunning},
}

// Check returns nil when action a is legal from state s, or an error
// wrapping ErrIllegalTransition that says what would make it legal.
func (s State) Check(a Action) error {
	for _, ok := range allowedFrom[a] {
		if s == ok {
			return nil
		}
	}
	switch {
	case s.Transitional():
		return fmt.Errorf("cannot %s: instance is %s; wait for that to finish: %w", a, s, ErrIllegalTransition)
	case a == ActionStart && s == StateRunning:
		return fmt.Errorf("cannot start: instance is already Running: %w", ErrIllegalTransition)
	case a == ActionStop && s == StateStopped:
		return fmt.Errorf("cannot stop: instance is already Stopped: %w", ErrIllegalTransition)
	case a == ActionAccess && s == StateStopped:
		return fmt.Errorf("instance is Stopped; start it first: %w", ErrIllegalTransition)
	case s == StateCreateFailed:
		return fmt.Errorf("cannot %s: instance is CreateFailed; delete it and create it again: %w", a, ErrIllegalTransition)
	}
	return fmt.Errorf("cannot %s an instance that is %s: %w", a, s, ErrIllegalTransition)
}

// Busy states of each action: the state an instance takes while the
// operation runs.
func (a Action) BusyState() State {
	switch a {
	case ActionStart:
		return StateStarting
	case ActionStop:
		return StateStopping
	case ActionRestart:
		return StateRestarting
	case ActionDelete:
		return StateDeleting
	}
	return StateUnknown
}
