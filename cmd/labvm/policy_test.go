package main

import (
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

func TestIdleLine(t *testing.T) {
	cpu := 0.4
	recent := time.Now().Add(-2 * time.Minute)
	for _, tc := range []struct {
		idle api.IdleShutdown
		want string
	}{
		{api.IdleShutdown{}, "no idle shutdown (set one with `labvm idle-shutdown alice-dev 30m`)"},
		{api.IdleShutdown{Limit: "30m", LimitSeconds: 1800}, "stops after 30m unused (clock runs while Running)"},
		{api.IdleShutdown{Limit: "30m", Watched: true, IdleSeconds: 12 * 60, CPUPercent: &cpu}, "12m of 30m (no sessions, no jobs, CPU 0.4%)"},
		{api.IdleShutdown{Limit: "2h", Watched: true, IdleSeconds: 65 * 60, SessionsOpen: 1, Jobs: 2}, "1h5m of 2h (1 session open, 2 jobs, CPU not measured yet)"},
		{api.IdleShutdown{Limit: "1d", Watched: true, IdleSeconds: 120, LastSessionAt: &recent, CPUPercent: &cpu}, "2m of 1d (last session 2m ago, no jobs, CPU 0.4%)"},
	} {
		got := idleLine(api.Instance{Name: "alice-dev", IdleShutdown: tc.idle})
		if got != tc.want {
			t.Errorf("idleLine(%+v) = %q, want %q", tc.idle, got, tc.want)
		}
	}
}

func TestScheduleText(t *testing.T) {
	ran := time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	s := api.Schedule{ID: 3, Stop: "0 19 * * 1-5", Start: "0 8 * * 1-5", Timezone: "UTC",
		Next: &api.ScheduleRun{Action: "stop", At: time.Date(2026, 12, 2, 19, 0, 0, 0, time.UTC)},
		Last: &api.ScheduleRun{Action: "start", At: time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC), RanAt: &ran, Operation: "abc", Missed: true}}
	got := scheduleText(s)
	for _, want := range []string{`#3 stop "0 19 * * 1-5", start "0 8 * * 1-5" UTC`, "next: stop Wed 2026-12-02 19:00 UTC",
		"last: start Wed 2026-12-02 08:00 UTC (operation abc) [missed while labvmd was down"} {
		if !strings.Contains(got, want) {
			t.Errorf("scheduleText = %q; missing %q", got, want)
		}
	}
	s.Last = &api.ScheduleRun{Action: "stop", At: ran, Skipped: "already Stopped"}
	if got := scheduleText(s); !strings.Contains(got, "(skipped: already Stopped)") {
		t.Errorf("a skipped run: %q", got)
	}
}
