// Package policy owns what starts and stops instances without anyone
// asking at that moment: the idle shutdown (an instance unused for its
// idle period is stopped) and start/stop schedules (cron expressions in a
// time zone, kept in the store, with a missed action applied once when
// labvmd comes back). It also owns the record of guest sessions that
// moved bytes, which the idle shutdown reads.
//
// Its actions are ordinary lifecycle operations (lifecycle.ActFor), done
// as "policy:idle" or "policy:schedule", audited, and never begun while
// another operation holds the instance. It knows nothing of HTTP; its
// goroutines belong to the context Run is given. Time comes from a Clock,
// so tests run it on a fake one.
package policy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/audit"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// The actors policies act as, in the operation list and the audit log.
const (
	ActorIdle     = "policy:idle"
	ActorSchedule = "policy:schedule"
)

// Audit names of policy actions, the same as the API's for the calls.
const (
	auditStop  = "computes/stop/action"
	auditStart = "computes/start/action"
)

// Clock is the time as the policies see it: the real one in labvmd, a
// fake one in tests.
type Clock interface {
	Now() time.Time
	// After fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer of a Clock.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// RealClock is the wall clock.
type RealClock struct{}

func (RealClock) Now() time.Time { return time.Now() }

func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

// Lifecycle is what the policies need of the instance engine.
type Lifecycle interface {
	Instances() ([]vm.Instance, error)
	ActFor(p lifecycle.PolicyAction, inst vm.Instance) (store.Operation, error)
}

// Jobs counts an instance's jobs.
type Jobs interface {
	Counts(instanceID string) (running, queued int)
}

// Operations is the operation engine: who holds an instance, and the
// audit of an operation when it ends.
type Operations interface {
	Holder(instanceID string) (string, bool)
	NoteAudit(id, action, target string, who ops.Who)
}

// DomainStatser reads every running domain's counters (CPU time).
type DomainStatser interface {
	DomainStats(ctx context.Context) ([]vm.DomainStats, error)
}

// Observer counts what the policies did (the metrics).
type Observer interface {
	IdleStop()
	ScheduleAction(action, outcome string)
}

// Config tunes the policies.
type Config struct {
	// Sample is how often the idle shutdown reads its signals; the
	// guest's CPU use is averaged over it. Default 1 minute.
	Sample time.Duration
	// CPUThreshold is the guest CPU use, in percent of its vCPUs, at or
	// above which an instance counts as in use. Default 5.
	CPUThreshold float64
	// CronSeconds makes schedules take a leading seconds field. TEST
	// ONLY (labvmd --test-cron-seconds).
	CronSeconds bool
}

// Defaults of Config.
const (
	DefaultSample       = time.Minute
	DefaultCPUThreshold = 5.0
)

// Deps are what an Engine is built from.
type Deps struct {
	Log       *slog.Logger
	Clock     Clock
	Store     *store.Store
	Lifecycle Lifecycle
	Jobs      Jobs
	Ops       Operations
	// Stats reads CPU time; nil leaves CPU out of the idle decision.
	Stats    DomainStatser
	Audit    *audit.Log
	Observer Observer
}

// Engine runs the idle shutdown and the schedules.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	clock    Clock
	store    *store.Store
	lc       Lifecycle
	jobs     Jobs
	ops      Operations
	stats    DomainStatser
	audit    *audit.Log
	observer Observer

	// Activity records guest sessions (the API's relays feed it).
	Activity *Activity

	mu sync.Mutex
	// idle is the idle clock of each Running instance with an idle
	// shutdown, by instance id.
	idle map[string]*idleClock
	// started is when Run began: schedule times before it were missed.
	started time.Time
	// kick wakes the schedule loop after a schedule was added or removed.
	kick chan struct{}
}

// New returns an engine; Run starts it.
func New(cfg Config, d Deps) *Engine {
	if cfg.Sample <= 0 {
		cfg.Sample = DefaultSample
	}
	if cfg.CPUThreshold <= 0 {
		cfg.CPUThreshold = DefaultCPUThreshold
	}
	if d.Clock == nil {
		d.Clock = RealClock{}
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	return &Engine{cfg: cfg, log: d.Log, clock: d.Clock, store: d.Store, lc: d.Lifecycle, jobs: d.Jobs, ops: d.Ops,
		stats: d.Stats, audit: d.Audit, observer: d.Observer, Activity: NewActivity(d.Clock),
		idle: map[string]*idleClock{}, kick: make(chan struct{}, 1)}
}

// Run starts the idle watcher and the schedule loop, first applying the
// schedules' actions missed while labvmd was down. They stop when ctx
// ends; the returned function waits for them.
func (e *Engine) Run(ctx context.Context) (wait func()) {
	e.mu.Lock()
	e.started = e.clock.Now()
	e.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		e.runIdle(ctx)
	}()
	go func() {
		defer wg.Done()
		e.runSchedules(ctx)
	}()
	return wg.Wait
}

// auditSkip records an action a policy chose not to take, and why.
func (e *Engine) auditSkip(actor, action, target, why string) {
	if e.audit != nil {
		e.audit.Skipped(audit.Who{Name: actor}, action, target, why)
	}
}
