package library

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
)

// TestPullMeterThrottles checks that progress reaches the operation a few
// times a second at most, but always at the end.
func TestPullMeterThrottles(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "labvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	op, err := ops.New(ops.Options{Store: st}).Begin(api.OpImagePull, "x", "", ops.Who{Name: "root"})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Finish(nil)
	op.Stage(StepDownload, "")
	clock := time.Unix(0, 0)
	m := &pullMeter{op: op, now: func() time.Time { return clock }}
	detail := func() string { s := op.Snapshot().Stages; return s[len(s)-1].Detail }

	steps := []struct {
		after  time.Duration
		done   int64
		detail string
	}{
		{done: 1 << 20, detail: "1.0 MiB / 4.0 MiB (25%)"},
		{after: 100 * time.Millisecond, done: 2 << 20, detail: "1.0 MiB / 4.0 MiB (25%)"},
		{after: 200 * time.Millisecond, done: 3 << 20, detail: "3.0 MiB / 4.0 MiB (75%) 6.7 MiB/s"},
		{after: time.Millisecond, done: 4 << 20, detail: "4.0 MiB / 4.0 MiB (100%) 10.0 MiB/s"},
	}
	for _, s := range steps {
		clock = clock.Add(s.after)
		m.update(s.done, 4<<20)
		if got := detail(); got != s.detail {
			t.Fatalf("after %d bytes detail = %q, want %q", s.done, got, s.detail)
		}
	}
}

func TestFormatPull(t *testing.T) {
	tests := []struct {
		done, total int64
		rate        float64
		want        string
	}{
		{done: 0, total: 512 << 20, want: "0 B / 512.0 MiB (0%)"},
		{done: 129394278, total: 512 << 20, rate: 45.6 * (1 << 20), want: "123.4 MiB / 512.0 MiB (24%) 45.6 MiB/s"},
		{done: 3 << 30, total: -1, rate: 1000, want: "3.0 GiB 1000 B/s"},
		{done: 1536, total: 1536, want: "1.5 KiB / 1.5 KiB (100%)"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := formatPull(tc.done, tc.total, tc.rate); got != tc.want {
				t.Fatalf("formatPull(%d, %d, %v) = %q, want %q", tc.done, tc.total, tc.rate, got, tc.want)
			}
		})
	}
}
