package policy

import (
	"testing"
	"time"
)

// TestIdleDecision walks an idle clock through looks, each a row of
// signals, and checks when it says the instance is due to stop.
func TestIdleDecision(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	type look struct {
		min      int
		moved    int // minute a session last moved bytes; -1: never
		jobs     int
		cpu      float64
		cpuKnown bool
		wantIdle time.Duration
		wantDue  bool
	}
	quiet := func(min int) look {
		return look{min: min, moved: -1, cpu: 0.4, cpuKnown: true, wantIdle: time.Duration(min) * time.Minute}
	}
	for _, tc := range []struct {
		name  string
		limit time.Duration
		looks []look
	}{
		{"quiet for the whole limit stops", 15 * time.Minute, []look{
			quiet(5), quiet(10), func() look { l := quiet(15); l.wantDue = true; return l }(),
		}},
		{"a session that moved bytes resets the clock to when it did", 15 * time.Minute, []look{
			quiet(10),
			{min: 14, moved: 12, cpu: 0.4, cpuKnown: true, wantIdle: 2 * time.Minute},
			{min: 26, moved: 12, cpu: 0.4, cpuKnown: true, wantIdle: 14 * time.Minute},
			{min: 27, moved: 12, cpu: 0.4, cpuKnown: true, wantIdle: 15 * time.Minute, wantDue: true},
		}},
		{"a queued or running job resets it", 15 * time.Minute, []look{
			quiet(14),
			{min: 15, moved: -1, jobs: 1, cpu: 0.4, cpuKnown: true, wantIdle: 0},
			{min: 29, moved: -1, cpu: 0.4, cpuKnown: true, wantIdle: 14 * time.Minute},
			{min: 30, moved: -1, cpu: 0.4, cpuKnown: true, wantIdle: 15 * time.Minute, wantDue: true},
		}},
		{"CPU at the threshold resets it, below does not", 15 * time.Minute, []look{
			{min: 10, moved: -1, cpu: 5, cpuKnown: true, wantIdle: 0},
			{min: 24, moved: -1, cpu: 4.9, cpuKnown: true, wantIdle: 14 * time.Minute},
			{min: 25, moved: -1, cpu: 4.9, cpuKnown: true, wantIdle: 15 * time.Minute, wantDue: true},
		}},
		{"no CPU reading: never due, clock kept", 15 * time.Minute, []look{
			quiet(10),
			{min: 20, moved: -1, wantIdle: 20 * time.Minute},
			{min: 21, moved: -1, cpu: 1, cpuKnown: true, wantIdle: 21 * time.Minute, wantDue: true},
		}},
		{"an old session before the clock started counts for nothing", 15 * time.Minute, []look{
			{min: 15, moved: -30, cpu: 0, cpuKnown: true, wantIdle: 15 * time.Minute, wantDue: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newIdleClock(tc.limit, t0)
			for _, l := range tc.looks {
				s := signals{now: at(l.min), jobs: l.jobs, cpu: l.cpu, cpuKnown: l.cpuKnown}
				if l.moved != -1 {
					s.moved = at(l.moved)
				}
				c.observe(s, DefaultCPUThreshold)
				if got := c.idleFor(at(l.min)); got != l.wantIdle {
					t.Errorf("minute %d: idle for %s, want %s", l.min, got, l.wantIdle)
				}
				if got := c.due(at(l.min)); got != l.wantDue {
					t.Errorf("minute %d: due %v, want %v", l.min, got, l.wantDue)
				}
			}
		})
	}
}

func TestCPUSample(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	c := newIdleClock(time.Hour, t0)
	for i, tc := range []struct {
		total time.Duration
		after time.Duration
		vcpus int
		want  float64
		known bool
	}{
		{total: 10 * time.Second, after: 0, vcpus: 2, known: false},                        // baseline
		{total: 16 * time.Second, after: time.Minute, vcpus: 2, want: 5, known: true},      // 6s of 120 vCPU-seconds
		{total: 16 * time.Second, after: 2 * time.Minute, vcpus: 2, want: 0, known: true},  // nothing
		{total: time.Second, after: 3 * time.Minute, vcpus: 2, known: false},               // rebooted: counter restarted
		{total: 31 * time.Second, after: 4 * time.Minute, vcpus: 1, want: 50, known: true}, // one vCPU, half busy
	} {
		got, known := c.cpuSample(tc.total, t0.Add(tc.after), tc.vcpus)
		if known != tc.known || (known && (got < tc.want-0.001 || got > tc.want+0.001)) {
			t.Errorf("sample %d: %.3f%%, known %v; want %.3f%%, %v", i, got, known, tc.want, tc.known)
		}
	}
}

// TestActivity: sessions count while open, note bytes at most once a
// second, keep their half-close, and a deleted instance's record goes.
func TestActivity(t *testing.T) {
	clock := &stepClock{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	a := NewActivity(clock)
	s := a.Begin("aaaa")
	if open, moved := a.Last("aaaa"); open != 1 || !moved.IsZero() {
		t.Fatalf("a session that moved nothing: open %d, moved %s", open, moved)
	}
	guest := &halfCloser{}
	w := s.Wrap(guest)
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	first := clock.now
	clock.now = clock.now.Add(500 * time.Millisecond)
	_, _ = w.Write([]byte("y"))
	if _, moved := a.Last("aaaa"); !moved.Equal(first) {
		t.Errorf("moved %s; a second note within a second must not be taken", moved)
	}
	clock.now = clock.now.Add(time.Second)
	_, _ = w.Read(make([]byte, 1))
	if _, moved := a.Last("aaaa"); !moved.Equal(clock.now) {
		t.Errorf("moved %s after a read, want %s", moved, clock.now)
	}
	if err := w.(interface{ CloseWrite() error }).CloseWrite(); err != nil || !guest.halfClosed {
		t.Errorf("CloseWrite did not reach the guest stream: %v", err)
	}
	a.Touch("bbbb")
	if a.Open() != 1 {
		t.Errorf("open sessions %d, want 1", a.Open())
	}
	a.prune(map[string]bool{})
	if open, _ := a.Last("aaaa"); open != 1 {
		t.Error("an instance with a session open was forgotten")
	}
	if _, moved := a.Last("bbbb"); !moved.IsZero() {
		t.Error("a deleted instance's record was kept")
	}
	s.End()
	s.End()
	if a.Open() != 0 {
		t.Errorf("open sessions %d after End twice, want 0", a.Open())
	}
}

type stepClock struct{ now time.Time }

func (c *stepClock) Now() time.Time                 { return c.now }
func (c *stepClock) NewTimer(d time.Duration) Timer { return RealClock{}.NewTimer(d) }

type halfCloser struct{ halfClosed bool }

func (h *halfCloser) Read(p []byte) (int, error)  { return len(p), nil }
func (h *halfCloser) Write(p []byte) (int, error) { return len(p), nil }
func (h *halfCloser) Close() error                { return nil }
func (h *halfCloser) CloseWrite() error           { h.halfClosed = true; return nil }
