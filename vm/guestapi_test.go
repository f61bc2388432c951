package vm

import "testing"

func TestDomainStatusString(t *testing.T) {
	tests := []struct {
		s    DomainStatus
		want string
	}{
		{DomainAbsent, "absent"},
		{DomainRunning, "running"},
		{DomainPaused, "paused"},
		{DomainShutoff, "shutoff"},
		{DomainOther, "other"},
		{DomainStatus(42), "DomainStatus(42)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%d.String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}
