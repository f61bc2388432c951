package vm

import (
	"errors"
	"testing"
)

func TestStateCheck(t *testing.T) {
	tests := []struct {
		from  State
		act   Action
		legal bool
	}{
		{StateStopped, ActionStart, true},
		{StateRunning, ActionStart, false},
		{StateRunning, ActionStop, true},
		{StateStopped, ActionStop, false},
		{StateSetupFailed, ActionStop, true},
		{StateRunning, ActionRestart, true},
		{StateStopped, ActionRestart, false},
		{StateCreateFailed, ActionDelete, true},
		{StateCreateFailed, ActionStart, false},
		{StateStopped, ActionDelete, true},
		{StateCreating, ActionDelete, false},
		{StateStopping, ActionStart, false},
		{StateRunning, ActionAccess, true},
		{StateSettingUp, ActionAccess, false},
		{StateStopped, ActionAccess, false},
	}
	for _, tt := range tests {
		err := tt.from.Check(tt.act)
		if tt.legal && err != nil {
			t.Errorf("%s from %s: unexpected error %v", tt.act, tt.from, err)
		}
		if !tt.legal && !errors.Is(err, ErrIllegalTransition) {
			t.Errorf("%s from %s: got %v, want ErrIllegalTransition", tt.act, tt.from, err)
		}
	}
}

func TestStateTextRoundTrip(t *testing.T) {
	for s := StateUnknown; s <= StateSetupFailed; s++ {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got State
		if err := got.UnmarshalText(b); err != nil {
			t.Fatalf("unmarshal %q: %v", b, err)
		}
		if got != s {
			t.Errorf("round trip of %s gave %s", s, got)
		}
	}
	var s State
	if err := s.UnmarshalText([]byte("Exploded")); err == nil {
		t.Error("unknown state name accepted")
	}
}
