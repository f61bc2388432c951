package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("zoneinfo has no %s: %v", name, err)
	}
	return loc
}

func fiveFields() cron.Parser {
	return (&Engine{}).parser()
}

func TestParseSpec(t *testing.T) {
	utc := time.UTC
	withSeconds := (&Engine{cfg: Config{CronSeconds: true}}).parser()
	for _, tc := range []struct {
		spec    string
		seconds bool
		bad     string
	}{
		{spec: "0 19 * * 1-5"},
		{spec: "*/15 8-18 * * mon-fri"},
		{spec: "@daily"},
		{spec: "@hourly"},
		{spec: "*/5 * * * * *", seconds: true},
		{spec: "*/5 * * * * *", bad: "expected exactly 5 fields"},
		{spec: "61 * * * *", bad: "above maximum"},
		{spec: "0 19 * *", bad: "expected exactly 5 fields"},
		{spec: "", bad: "empty spec"},
		{spec: "@every 1h", bad: "@every is not a time of day"},
		{spec: "CRON_TZ=UTC 0 19 * * *", bad: "--timezone"},
		{spec: "TZ=UTC 0 19 * * *", bad: "--timezone"},
		{spec: "0 0 30 2 *", bad: "never comes due"},
		{spec: strings.Repeat("1", 200), bad: "longer than"},
	} {
		p := fiveFields()
		if tc.seconds {
			p = withSeconds
		}
		_, err := parseSpec(p, tc.spec, utc)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q: %v", tc.spec, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%q: error %v, want one saying %q", tc.spec, err, tc.bad)
		}
	}
}

func TestLoadZone(t *testing.T) {
	if _, err := loadZone("Europe/Lisbon"); err != nil {
		t.Skipf("no zoneinfo: %v", err)
	}
	for _, tc := range []struct{ name, bad string }{
		{"UTC", ""},
		{"Asia/Kolkata", ""},
		{"Mars/Olympus_Mons", "unknown time zone"},
		{"Local", "name the zone"},
		{"", "no time zone"},
		{"../../etc/passwd", "unknown time zone"},
	} {
		_, err := loadZone(tc.name)
		if (tc.bad == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.bad)) {
			t.Errorf("loadZone(%q) = %v, want %q", tc.name, err, tc.bad)
		}
	}
}

// TestScheduleTimes: the next time, and the action due in a window (the
// latest of stop and start), in several zones and over both of
// daylight saving's changes.
func TestScheduleTimes(t *testing.T) {
	lisbon, tokyo, ny := zone(t, "Europe/Lisbon"), zone(t, "Asia/Tokyo"), zone(t, "America/New_York")
	p := fiveFields()
	mustSpec := func(spec string, loc *time.Location) *zoned {
		z, err := parseSpec(p, spec, loc)
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	utc := func(s string) time.Time {
		tt, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tt
	}
	t.Run("next", func(t *testing.T) {
		for _, tc := range []struct {
			spec string
			loc  *time.Location
			from string
			want string
		}{
			// Friday 19:00 in Lisbon (WET, UTC+0) is 19:00 UTC; the next
			// weekday 19:00 after it is Monday's.
			{"0 19 * * 1-5", lisbon, "2026-11-27T18:00:00Z", "2026-11-27T19:00:00Z"},
			{"0 19 * * 1-5", lisbon, "2026-11-27T19:00:00Z", "2026-11-30T19:00:00Z"},
			// Summer time: 19:00 WEST is 18:00 UTC.
			{"0 19 * * 1-5", lisbon, "2026-07-01T00:00:00Z", "2026-07-01T18:00:00Z"},
			// Tokyo is UTC+9 all year: 08:00 there is 23:00 UTC the day before.
			{"0 8 * * 1-5", tokyo, "2026-11-29T12:00:00Z", "2026-11-29T23:00:00Z"},
			// Spring forward in Lisbon (2026-03-29, 01:00 WET → 02:00 WEST):
			// 01:30 does not exist that day; it comes due once, at the jump
			// (01:00 UTC), and the day after as usual.
			{"30 1 * * *", lisbon, "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z"},
			{"30 1 * * *", lisbon, "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"},
			// Fall back (2026-10-25, 02:00 WEST → 01:00 WET): 01:30 comes
			// twice on the wall clock, due once (the second time).
			{"30 1 * * *", lisbon, "2026-10-24T23:00:00Z", "2026-10-25T01:30:00Z"},
			{"30 1 * * *", lisbon, "2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"},
			// New York's spring forward (2026-03-08, 02:00 EST → 03:00
			// EDT at 07:00 UTC): 02:30 is due at the jump.
			{"30 2 * * *", ny, "2026-03-08T05:00:00Z", "2026-03-08T07:00:00Z"},
			{"30 2 * * *", ny, "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"},
		} {
			got := mustSpec(tc.spec, tc.loc).next(utc(tc.from))
			if want := utc(tc.want); !got.Equal(want) {
				t.Errorf("%q in %s after %s: %s, want %s", tc.spec, tc.loc, tc.from, got.UTC().Format(time.RFC3339), tc.want)
			}
		}
	})
	t.Run("due", func(t *testing.T) {
		c := compiled{stop: mustSpec("0 19 * * 1-5", lisbon), start: mustSpec("0 8 * * 1-5", lisbon)}
		for _, tc := range []struct {
			name, after, until string
			action             string
			at                 string
		}{
			{"nothing due within the working day", "2026-11-30T08:00:00Z", "2026-11-30T18:59:59Z", "", ""},
			{"the stop at 19:00", "2026-11-30T18:59:00Z", "2026-11-30T19:00:00Z", ActionStop, "2026-11-30T19:00:00Z"},
			{"down over a weekend: the latest missed is Friday's stop", "2026-11-27T07:00:00Z", "2026-11-29T12:00:00Z", ActionStop, "2026-11-27T19:00:00Z"},
			{"down overnight: the morning start is later than the evening stop", "2026-11-30T18:00:00Z", "2026-12-01T09:00:00Z", ActionStart, "2026-12-01T08:00:00Z"},
			{"down for two months: only the last 31 days are looked at, latest wins", "2026-09-01T00:00:00Z", "2026-11-30T09:00:00Z", ActionStart, "2026-11-30T08:00:00Z"},
			{"the window's start is excluded", "2026-11-30T19:00:00Z", "2026-11-30T20:00:00Z", "", ""},
			{"spring forward: 01:30 still comes due", "2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z", "", ""},
		} {
			action, at := c.due(utc(tc.after), utc(tc.until))
			if action != tc.action || (tc.at != "" && !at.Equal(utc(tc.at))) {
				t.Errorf("%s: %q at %s; want %q at %s", tc.name, action, at.UTC().Format(time.RFC3339), tc.action, tc.at)
			}
		}
		daily := compiled{stop: mustSpec("30 1 * * *", lisbon)}
		if action, at := daily.due(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T02:00:00Z")); action != ActionStop || !at.Equal(utc("2026-03-29T01:00:00Z")) {
			t.Errorf("spring forward: 01:30 stop due %q at %s", action, at)
		}
		// Fall back: one due time in the repeated hour, not two.
		n := 0
		for w := utc("2026-10-24T22:00:00Z"); ; {
			action, at := daily.due(w, w.Add(15*time.Minute))
			if action != "" {
				n++
			}
			_ = at
			w = w.Add(15 * time.Minute)
			if w.After(utc("2026-10-25T04:00:00Z")) {
				break
			}
		}
		if n != 1 {
			t.Errorf("fall back: 01:30 came due %d times, want once", n)
		}
	})
}
