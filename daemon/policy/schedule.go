package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
	"github.com/robfig/cron/v3"
)

// Schedule bounds.
const (
	// maxCatchUp is how far back a daemon that was down looks for the
	// action it missed: older times are not acted on.
	maxCatchUp = 31 * 24 * time.Hour
	// maxSleep bounds one sleep of the schedule loop, so a wall clock
	// set forward is noticed within it.
	maxSleep = time.Minute
	// maxSchedulesPerInstance keeps the loop's work bounded.
	maxSchedulesPerInstance = 16
	// maxSpec bounds a cron expression's length.
	maxSpec = 128
)

// Actions of a schedule, as the store and the API spell them.
const (
	ActionStart = "start"
	ActionStop  = "stop"
)

// Outcomes of a schedule's action, for the metrics.
const (
	OutcomeStarted = "started"
	OutcomeSkipped = "skipped"
)

// cronHint says how to write a schedule.
const cronHint = `use five cron fields "MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK", e.g. "0 19 * * 1-5" for 19:00 on weekdays, or @daily, @hourly`

// parser reads the host's cron expressions: five fields and the
// descriptors (@daily …), or with a leading seconds field for tests.
func (e *Engine) parser() cron.Parser {
	fields := cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor
	if e.cfg.CronSeconds {
		fields |= cron.Second
	}
	return cron.NewParser(fields)
}

// parseSpec reads one cron expression for a time zone. Time zones are
// given apart (--timezone); @every is refused, since "every N from when
// labvmd started" has no times to catch up on.
func parseSpec(p cron.Parser, spec string, loc *time.Location) (*zoned, error) {
	if len(spec) > maxSpec {
		return nil, fmt.Errorf("cron expression longer than %d characters", maxSpec)
	}
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return nil, fmt.Errorf("cron expression %q: give the time zone with --timezone, not in the expression", spec)
	}
	if strings.HasPrefix(spec, "@every") {
		return nil, fmt.Errorf("cron expression %q: @every is not a time of day; %s", spec, cronHint)
	}
	s, err := p.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("cron expression %q: %v", spec, err)
	}
	ss, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("cron expression %q: not a time of day", spec)
	}
	ss.Location = time.UTC // the expression is read on wall-clock times; see zoned
	z := &zoned{spec: ss, loc: loc}
	if z.next(time.Date(2000, 1, 1, 0, 0, 0, 0, loc)).IsZero() {
		return nil, fmt.Errorf("cron expression %q never comes due", spec)
	}
	return z, nil
}

// dstSlack is more than any zone's daylight-saving shift: how far around
// a window the wall-clock times are looked at.
const dstSlack = 3 * time.Hour

// zoned is a cron expression on the wall clock of a time zone, with the
// daylight-saving days done as cron daemons do them: a time the clocks
// skip (01:30 when they jump from 01:00 to 02:00) comes due once, at the
// jump; a time they pass twice comes due once (the second time). (robfig/cron's
// own Next skips the first and repeats the second.) The expression is
// matched on wall-clock times written in UTC; wall turns an instant into
// one and instant turns one back, as time.Date does in the zone.
type zoned struct {
	spec *cron.SpecSchedule
	loc  *time.Location
}

func (z *zoned) wall(t time.Time) time.Time {
	l := t.In(z.loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

func (z *zoned) instant(w time.Time) time.Time {
	r := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), z.loc)
	if z.wall(r).Equal(w) {
		return r
	}
	// The clocks skip w: it is due at the jump, the first instant whose
	// wall-clock time is past w (time.Date's own choice differs by zone).
	lo, hi := r.Add(-dstSlack), r.Add(dstSlack)
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2)
		if z.wall(mid).After(w) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi.Truncate(time.Second)
}

// next is the first time after t, or zero if there is none.
func (z *zoned) next(t time.Time) time.Time {
	var best, bestWall time.Time
	for w := z.spec.Next(z.wall(t).Add(-dstSlack)); !w.IsZero(); w = z.spec.Next(w) {
		if !best.IsZero() && w.After(bestWall.Add(dstSlack)) {
			break
		}
		if r := z.instant(w); r.After(t) && (best.IsZero() || r.Before(best)) {
			best, bestWall = r, w
		}
	}
	return best
}

// latestIn is the latest time in (after, until], or zero. A daemon that
// was down longer than maxCatchUp looks back that far only.
func (z *zoned) latestIn(after, until time.Time) time.Time {
	if z == nil {
		return time.Time{}
	}
	if until.Sub(after) > maxCatchUp {
		after = until.Add(-maxCatchUp)
	}
	var last time.Time
	end := z.wall(until).Add(dstSlack)
	for w := z.spec.Next(z.wall(after).Add(-dstSlack)); !w.IsZero() && !w.After(end); w = z.spec.Next(w) {
		if r := z.instant(w); r.After(after) && !r.After(until) && r.After(last) {
			last = r
		}
	}
	return last
}

// loadZone reads a time zone from the host's zoneinfo.
func loadZone(name string) (*time.Location, error) {
	if name == "" {
		return nil, errors.New("no time zone")
	}
	if strings.EqualFold(name, "local") {
		return nil, fmt.Errorf("time zone %q: name the zone (e.g. Europe/Lisbon), so the schedule keeps its meaning if the host's changes", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q (from the host's zoneinfo): use an IANA name such as Europe/Lisbon or UTC; `timedatectl list-timezones` lists them", name)
	}
	return loc, nil
}

// compiled is a schedule ready to compute times.
type compiled struct {
	stop, start *zoned
}

func (e *Engine) compile(s store.Schedule) (compiled, error) {
	var c compiled
	loc, err := loadZone(s.Timezone)
	if err != nil {
		return c, err
	}
	p := e.parser()
	if s.Stop != "" {
		if c.stop, err = parseSpec(p, s.Stop, loc); err != nil {
			return c, err
		}
	}
	if s.Start != "" {
		if c.start, err = parseSpec(p, s.Start, loc); err != nil {
			return c, err
		}
	}
	return c, nil
}

// due is the action a schedule owes in (after, until]: the later of its
// latest stop and latest start time, or none.
func (c compiled) due(after, until time.Time) (action string, at time.Time) {
	stop, start := c.stop.latestIn(after, until), c.start.latestIn(after, until)
	switch {
	case stop.IsZero() && start.IsZero():
		return "", time.Time{}
	case !stop.Before(start):
		// A stop and a start at the same time: the stop wins, the
		// cheaper mistake.
		return ActionStop, stop
	default:
		return ActionStart, start
	}
}

// next is the schedule's first time after t, or zero.
func (c compiled) next(t time.Time) time.Time {
	var n time.Time
	for _, s := range []*zoned{c.stop, c.start} {
		if s == nil {
			continue
		}
		if x := s.next(t); !x.IsZero() && (n.IsZero() || x.Before(n)) {
			n = x
		}
	}
	return n
}

// ScheduleRequest adds a schedule.
type ScheduleRequest struct {
	Stop, Start, Timezone string
	CreatedBy             string
	CreatedByUID          int
}

// AddSchedule validates and stores a schedule for an instance; the
// caller was authorized to start and stop it. Nothing is stored on bad
// input.
func (e *Engine) AddSchedule(inst vm.Instance, req ScheduleRequest) (store.Schedule, error) {
	req.Stop, req.Start, req.Timezone = strings.TrimSpace(req.Stop), strings.TrimSpace(req.Start), strings.TrimSpace(req.Timezone)
	if req.Stop == "" && req.Start == "" {
		return store.Schedule{}, errdefs.New(errdefs.ErrInvalidArgument, cronHint, "a schedule needs --stop, --start or both")
	}
	if req.Timezone == "" {
		return store.Schedule{}, errdefs.New(errdefs.ErrInvalidArgument, "e.g. --timezone Europe/Lisbon, or --timezone UTC", "--timezone is required")
	}
	uid := req.CreatedByUID
	now := e.clock.Now().UTC()
	s := store.Schedule{InstanceID: inst.ID, Stop: req.Stop, Start: req.Start, Timezone: req.Timezone,
		CreatedBy: req.CreatedBy, CreatedByUID: &uid, CreatedAt: now, CheckedUntil: now}
	if _, err := e.compile(s); err != nil {
		hint := cronHint
		if strings.Contains(err.Error(), "time zone") {
			hint = ""
		}
		return store.Schedule{}, errdefs.New(errdefs.ErrInvalidArgument, hint, "%v", err)
	}
	err := e.store.Update(func(tx *store.Tx) error {
		if _, err := tx.Instance(inst.ID); err != nil {
			return errdefs.New(errdefs.ErrNotFound, "", "instance %q not found", inst.Name)
		}
		all, err := tx.Schedules()
		if err != nil {
			return err
		}
		n := 0
		for _, o := range all {
			if o.InstanceID == inst.ID {
				n++
			}
		}
		if n >= maxSchedulesPerInstance {
			return errdefs.New(errdefs.ErrConflict, "remove one with `labvm schedule remove "+inst.Name+" ID`",
				"%s already has %d schedules, the most an instance may have", inst.Name, n)
		}
		s, err = tx.CreateSchedule(s)
		return err
	})
	if err != nil {
		return store.Schedule{}, err
	}
	e.wake()
	return s, nil
}

// RemoveSchedule deletes one of an instance's schedules.
func (e *Engine) RemoveSchedule(inst vm.Instance, id int) error {
	err := e.store.Update(func(tx *store.Tx) error {
		s, err := tx.Schedule(id)
		if err != nil || s.InstanceID != inst.ID {
			return errdefs.New(errdefs.ErrNotFound, "`labvm schedule list "+inst.Name+"` shows its schedules",
				"%s has no schedule %d", inst.Name, id)
		}
		return tx.DeleteSchedule(id)
	})
	if err == nil {
		e.wake()
	}
	return err
}

// Schedules lists the schedules of the instances keep says to, by id.
func (e *Engine) Schedules(keep func(instanceID string) bool) ([]store.Schedule, error) {
	var all []store.Schedule
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		all, err = tx.Schedules()
		return err
	})
	out := all[:0]
	for _, s := range all {
		if keep == nil || keep(s.InstanceID) {
			out = append(out, s)
		}
	}
	return out, err
}

// NextRun is a schedule's next action after now, or zero.
func (e *Engine) NextRun(s store.Schedule) (action string, at time.Time) {
	c, err := e.compile(s)
	if err != nil {
		return "", time.Time{}
	}
	at = c.next(e.clock.Now())
	if at.IsZero() {
		return "", at
	}
	action, _ = c.due(at.Add(-time.Nanosecond), at)
	return action, at
}

// wake makes the schedule loop look again (a schedule changed).
func (e *Engine) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// runSchedules acts on the schedules as they come due until ctx ends.
// Its first pass applies what was missed while labvmd was down.
func (e *Engine) runSchedules(ctx context.Context) {
	for {
		now := e.clock.Now()
		next := e.schedulePass(now)
		sleep := maxSleep
		if !next.IsZero() && next.Sub(now) < sleep {
			sleep = max(next.Sub(now), 0)
		}
		t := e.clock.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-e.kick:
			t.Stop()
		}
	}
}

// schedulePass acts on every schedule due by now and returns the next
// time one comes due.
func (e *Engine) schedulePass(now time.Time) (next time.Time) {
	all, err := e.Schedules(nil)
	if err != nil {
		e.log.Error("schedules: read", "error", err)
		return time.Time{}
	}
	e.mu.Lock()
	started := e.started
	e.mu.Unlock()
	for _, s := range all {
		c, err := e.compile(s)
		if err != nil {
			// Stored before a change of the host (its zoneinfo, or the
			// test-only seconds field): kept, reported, never acted on.
			e.log.Error("schedules: cannot read a stored schedule; it is not acted on", "schedule", s.ID, "error", err)
			continue
		}
		// Only a run is written: with nothing due in (CheckedUntil, now],
		// the next window finds the same times from the old mark.
		if action, at := c.due(s.CheckedUntil, now); action != "" {
			run := e.applySchedule(s, action, at, now)
			run.Missed = at.Before(started)
			s.Last = &run
			s.CheckedUntil = now.UTC()
			if err := e.store.Update(func(tx *store.Tx) error { return tx.PutSchedule(s) }); err != nil && !errors.Is(err, store.ErrNotFound) {
				e.log.Error("schedules: record a run", "schedule", s.ID, "error", err)
			}
		}
		if n := c.next(now); !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next
}

// applySchedule starts or stops a schedule's instance, unless it is
// already there or busy; either way the run says what happened.
func (e *Engine) applySchedule(s store.Schedule, action string, at, now time.Time) store.ScheduleRun {
	run := store.ScheduleRun{Action: action, At: at.UTC(), RanAt: now.UTC()}
	act, target, auditAction := vm.ActionStop, vm.StateStopped, auditStop
	if action == ActionStart {
		act, target, auditAction = vm.ActionStart, vm.StateRunning, auditStart
	}
	var inst vm.Instance
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		inst, err = tx.Instance(s.InstanceID)
		return err
	})
	skip := func(why string) store.ScheduleRun {
		run.Skipped = why
		e.log.Info("schedule: nothing done", "schedule", s.ID, "instance", inst.Name, "action", action, "why", why)
		e.auditSkip(ActorSchedule, auditAction, inst.Name, fmt.Sprintf("schedule %d (%s at %s): %s", s.ID, action, at.In(mustZone(s.Timezone)).Format("2006-01-02 15:04 MST"), why))
		if e.observer != nil {
			e.observer.ScheduleAction(action, OutcomeSkipped)
		}
		return run
	}
	if err != nil {
		return skip(fmt.Sprintf("instance %s: %v", s.InstanceID, err))
	}
	if holder, busy := e.ops.Holder(inst.ID); busy {
		return skip(fmt.Sprintf("busy with operation %s", holder))
	}
	if inst.State == target {
		return skip(fmt.Sprintf("already %s", target))
	}
	if err := inst.State.Check(act); err != nil {
		return skip(err.Error())
	}
	who := ops.Who{Name: ActorSchedule}
	p := lifecycle.PolicyAction{Who: who, Action: act}
	if act == vm.ActionStop {
		p.Reason = fmt.Sprintf("stopped by schedule %d (%s)", s.ID, s.Stop)
	}
	op, err := e.lc.ActFor(p, inst)
	if err != nil {
		return skip(err.Error())
	}
	e.ops.NoteAudit(op.ID, auditAction, inst.Name, who)
	e.log.Info("schedule: acting", "schedule", s.ID, "instance", inst.Name, "action", action, "at", at, "operation", op.ID)
	if e.observer != nil {
		e.observer.ScheduleAction(action, OutcomeStarted)
	}
	run.Operation = op.ID
	return run
}

// mustZone is a stored schedule's zone, or UTC if the host lost it.
func mustZone(name string) *time.Location {
	if loc, err := time.LoadLocation(name); err == nil {
		return loc
	}
	return time.UTC
}
