package ops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
)

// Status values of store.Operation.Status.
const (
	StatusRunning   = string(api.OperationRunning)
	StatusSucceeded = string(api.OperationSucceeded)
	StatusFailed    = string(api.OperationFailed)
	StatusCancelled = string(api.OperationCancelled)
)

// ErrBusy is returned when another operation holds the instance.
var ErrBusy = errdefs.New(errdefs.ErrConflict, "", "instance busy")

// Step is one named step of an operation. ID is stable (crash points,
// tests and the stored record key on it); Title is for people.
type Step struct {
	ID    string
	Title string
}

// Who started an operation.
type Who struct {
	Name string
	UID  int
}

// Auditor records an operation's outcome when it ends.
type Auditor interface {
	Record(who Who, action, target, opID string, err error)
}

// Observer is told of every operation as it ends (the metrics). It is
// called on the operation's goroutine and must not block.
type Observer interface {
	OperationFinished(Finished)
}

// Finished is an ended operation as an Observer sees it.
type Finished struct {
	Kind string
	// Outcome is StatusSucceeded, StatusFailed or StatusCancelled.
	Outcome string
	// Took runs from Begin to Finish.
	Took time.Duration
	// Steps are the steps that ran, in order, by their stable IDs.
	Steps []StepTime
}

// StepTime is how long one step of an operation took.
type StepTime struct {
	Step string
	Took time.Duration
}

// persistEvery bounds how often a running operation's progress (a step's
// detail) is written to the store, each write being an fsync. Running
// operations are served from memory; the stored copy matters only after
// a crash, so it may lag by this much. The start, every new step and the
// end of an operation are always written at once (see update).
const persistEvery = time.Second

// History bounds: finished operations older than keepFor go, and beyond
// keepCount the oldest finished go, checked every pruneEvery finishes.
const (
	keepFor    = 7 * 24 * time.Hour
	keepCount  = 2000
	pruneEvery = 100
)

// Engine tracks running operations, persists every change, and lets
// clients wait on them. Finished operations live only in the store.
type Engine struct {
	store *store.Store
	log   *slog.Logger
	crash *CrashPoint
	audit func(who Who, action, target, opID string, err error)
	// observer, when set, is told of every ended operation.
	observer Observer
	// Events fans every change out to `labvm events`.
	Events Bus

	// ctx is what operations run under; work owns their goroutines.
	ctx  context.Context
	work sync.WaitGroup

	mu sync.Mutex
	// running maps an operation id to its live state.
	running map[string]*liveOp
	// busy maps an instance id to the operation holding it: one operation
	// per instance at a time.
	busy     map[string]string
	finished int
	// onFinish runs after every operation (systemd STATUS).
	onFinish func()
}

type liveOp struct {
	op store.Operation
	// audit, when set, is written to the audit log as the operation ends.
	audit *opAudit
	// changed is closed and replaced on every change, waking all waiters.
	changed chan struct{}
	// persisted is when the operation was last written to the store.
	persisted time.Time
	// cancel ends the operation's context; cancelWhy says why.
	cancel    context.CancelCauseFunc
	cancelled bool
}

type opAudit struct {
	action, target string
	who            Who
}

// Options configure an Engine.
type Options struct {
	Store *store.Store
	Log   *slog.Logger
	// Crash is the test-only fault injector (nil in production).
	Crash *CrashPoint
	// Audit records ended operations that asked for it (NoteAudit).
	Audit Auditor
	// OnFinish runs after each operation ends.
	OnFinish func()
	// Observer is told of every ended operation (metrics).
	Observer Observer
}

// New returns an engine; Run must be given its context before Go is used.
func New(o Options) *Engine {
	e := &Engine{store: o.Store, log: o.Log, crash: o.Crash, running: map[string]*liveOp{}, busy: map[string]string{},
		onFinish: o.OnFinish, observer: o.Observer, ctx: context.Background()}
	if o.Audit != nil {
		e.audit = o.Audit.Record
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	return e
}

// SetContext sets what operations run under from now on. The daemon gives
// it a context that outlives its own by the shutdown grace.
func (e *Engine) SetContext(ctx context.Context) { e.ctx = ctx }

// Wait blocks until every operation goroutine has returned.
func (e *Engine) Wait() { e.work.Wait() }

// Add and Done let other long-lived goroutines of the daemon (listeners,
// schedulers) be waited for with the operations.
func (e *Engine) Add()  { e.work.Add(1) }
func (e *Engine) Done() { e.work.Done() }

func newOpID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// Op is the handle an operation's goroutine reports through.
type Op struct {
	e  *Engine
	id string
	// instanceID is the instance this operation holds, if any.
	instanceID string
	ctx        context.Context
}

// Begin registers a new operation, claiming instanceID (if non-empty)
// for it. A second operation on a busy instance gets a Conflict naming
// the first.
func (e *Engine) Begin(kind api.OperationKind, target, instanceID string, who Who) (*Op, error) {
	e.mu.Lock()
	if instanceID != "" {
		if holder, ok := e.busy[instanceID]; ok {
			kind := e.running[holder].op.Kind
			e.mu.Unlock()
			return nil, errdefs.WithHint(fmt.Errorf("%s is busy with operation %s (%s): %w", target, holder, kind, ErrBusy),
				"wait for it with `labvm wait "+holder+"`")
		}
	}
	uid := who.UID
	op := store.Operation{
		ID:         newOpID(),
		Kind:       string(kind),
		Target:     target,
		InstanceID: instanceID,
		Caller:     who.Name,
		CallerUID:  &uid,
		Status:     StatusRunning,
		Stages:     []store.Stage{},
		CreatedAt:  time.Now().UTC(),
	}
	ctx, cancel := context.WithCancelCause(e.ctx)
	// Claim first, persist outside the lock: holding e.mu across a bbolt
	// commit (which waits for every other writer) stalled every
	// operation's progress and every waiter behind it.
	e.running[op.ID] = &liveOp{op: op, changed: make(chan struct{}), persisted: time.Now(), cancel: cancel}
	if instanceID != "" {
		e.busy[instanceID] = op.ID
	}
	e.mu.Unlock()
	if err := e.store.Update(func(tx *store.Tx) error { return tx.PutOperation(op) }); err != nil {
		e.mu.Lock()
		delete(e.running, op.ID)
		if instanceID != "" && e.busy[instanceID] == op.ID {
			delete(e.busy, instanceID)
		}
		e.mu.Unlock()
		cancel(nil)
		return nil, fmt.Errorf("record operation: %w", err)
	}
	e.Events.publish(op)
	return &Op{e: e, id: op.ID, instanceID: instanceID, ctx: ctx}, nil
}

// Go runs fn as the operation's body in a goroutine the engine owns, and
// finishes the operation with fn's result. A panic in fn fails the
// operation (with the stack in the log) instead of killing the daemon.
func (e *Engine) Go(op *Op, fn func(ctx context.Context, op *Op) error) {
	e.work.Add(1)
	go func() {
		defer e.work.Done()
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					e.log.Error("panic in operation", "op", op.id, "panic", p, "stack", string(debug.Stack()))
					err = fmt.Errorf("internal error in operation %s: %v", op.id, p)
				}
			}()
			err = fn(op.ctx, op)
		}()
		if err != nil {
			e.log.Warn("operation failed", "op", op.ID(), "error", err)
		}
		op.Finish(err)
		if e.onFinish != nil {
			e.onFinish()
		}
	}()
}

// ID is the operation's id.
func (op *Op) ID() string { return op.id }

// Snapshot returns the operation as it is now, running or finished.
func (op *Op) Snapshot() store.Operation {
	got, _, err := op.e.Get(op.id)
	if err != nil {
		// Only a store failure gets here; the id is still the answer.
		return store.Operation{ID: op.id, Status: StatusRunning}
	}
	return got
}

// Stage marks the previous step done and starts a new one. Both are
// written to the store at once (see update), so the step log is the
// operation's intent and progress as of a crash.
func (op *Op) Stage(step Step, detail string) {
	op.crashCheck(false)
	op.update(func(o *store.Operation, now time.Time) {
		closeStage(o, now)
		o.Stages = append(o.Stages, store.Stage{Step: step.ID, Name: step.Title, Detail: detail, StartedAt: now})
	})
	op.crashCheck(true)
}

// Progress replaces the current step's detail, so a long step (a
// download) can say how far it got without adding steps. Writes to the
// store are throttled (persistEvery).
func (op *Op) Progress(detail string) {
	op.update(func(o *store.Operation, now time.Time) {
		if n := len(o.Stages); n > 0 && o.Stages[n-1].DoneAt == nil {
			o.Stages[n-1].Detail = detail
		}
	})
}

// Finish ends the operation with err's outcome and releases the instance.
// The instance is released before the operation reads as done: a client
// that saw it done must be able to start the next operation at once.
func (op *Op) Finish(err error) {
	op.crashCheck(false)
	e := op.e
	e.mu.Lock()
	if op.instanceID != "" && e.busy[op.instanceID] == op.id {
		delete(e.busy, op.instanceID)
	}
	cancelled := e.running[op.id].cancelled
	e.mu.Unlock()
	if cancelled && err == nil {
		err = context.Cause(op.ctx)
	}
	var final store.Operation
	op.update(func(o *store.Operation, now time.Time) {
		closeStage(o, now)
		o.DoneAt = &now
		o.Status = StatusSucceeded
		if err != nil {
			o.Status = StatusFailed
			if cancelled {
				o.Status = StatusCancelled
			}
			ae := errdefs.ToAPI(err)
			o.Error = &store.OperationError{Code: string(ae.Code), Message: ae.Message, Hint: ae.Hint}
		}
		final = clone(*o)
	})
	// Counted before it leaves the operations in flight, so a scrape
	// never misses it in both.
	if e.observer != nil {
		e.observer.OperationFinished(finished(final))
	}
	e.mu.Lock()
	live := e.running[op.id]
	delete(e.running, op.id)
	e.finished++
	prune := e.finished%pruneEvery == 0
	e.mu.Unlock()
	live.cancel(nil)
	if live.audit != nil && e.audit != nil {
		e.audit(live.audit.who, live.audit.action, live.audit.target, op.id, err)
	}
	if prune {
		e.Prune()
	}
}

// finished summarises an ended operation for the Observer. Steps without
// a stable ID (records older than step IDs) are left out: their names are
// UI text.
func finished(o store.Operation) Finished {
	f := Finished{Kind: o.Kind, Outcome: o.Status}
	if o.DoneAt != nil {
		f.Took = o.DoneAt.Sub(o.CreatedAt)
	}
	for _, st := range o.Stages {
		if st.Step == "" || st.DoneAt == nil {
			continue
		}
		f.Steps = append(f.Steps, StepTime{Step: st.Step, Took: st.DoneAt.Sub(st.StartedAt)})
	}
	return f
}

// Prune bounds the stored history.
func (e *Engine) Prune() {
	if err := e.store.Update(func(tx *store.Tx) error {
		_, err := tx.PruneOperations(time.Now().Add(-keepFor), keepCount)
		return err
	}); err != nil {
		e.log.Warn("prune operations", "error", err)
	}
}

// NoteAudit asks for the operation's outcome to be audited when it ends.
// If it already ended, it is audited now.
func (e *Engine) NoteAudit(id, action, target string, who Who) {
	e.mu.Lock()
	live, running := e.running[id]
	if running {
		live.audit = &opAudit{action: action, target: target, who: who}
	}
	e.mu.Unlock()
	if running || e.audit == nil {
		return
	}
	op, _, err := e.Get(id)
	if err != nil {
		return
	}
	e.audit(who, action, target, id, errdefs.Recorded(op.Error))
}

// CancelHolder cancels the operation holding instanceID, if any, with
// cause, and waits up to bound for it to release the instance. It returns
// the id of the operation it cancelled.
func (e *Engine) CancelHolder(ctx context.Context, instanceID string, cause error, bound time.Duration) (string, error) {
	e.mu.Lock()
	id, ok := e.busy[instanceID]
	if !ok {
		e.mu.Unlock()
		return "", nil
	}
	live := e.running[id]
	live.cancelled = true
	live.cancel(cause)
	e.mu.Unlock()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	for {
		_, changed, err := e.Get(id)
		if err != nil {
			return id, err
		}
		if h, busy := e.Holder(instanceID); !busy || h != id {
			return id, nil
		}
		if changed == nil {
			return id, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return id, errdefs.New(errdefs.ErrConflict, "wait for it with `labvm wait "+id+"`",
				"operation %s did not stop within %s after being cancelled", id, bound)
		case <-ctx.Done():
			return id, ctx.Err()
		}
	}
}

func closeStage(o *store.Operation, now time.Time) {
	if n := len(o.Stages); n > 0 && o.Stages[n-1].DoneAt == nil {
		o.Stages[n-1].DoneAt = &now
	}
}

func (op *Op) update(fn func(o *store.Operation, now time.Time)) {
	e := op.e
	e.mu.Lock()
	live := e.running[op.id]
	stages := len(live.op.Stages)
	fn(&live.op, time.Now().UTC())
	snap := clone(live.op)
	close(live.changed)
	live.changed = make(chan struct{})
	// A new step is written at once: it records the step's intent and
	// the previous step's completion, which reconcile reads after a crash.
	persist := snap.DoneAt != nil || len(snap.Stages) != stages || time.Since(live.persisted) >= persistEvery
	if persist {
		live.persisted = time.Now()
	}
	e.mu.Unlock()
	e.Events.publish(snap)
	if !persist {
		return
	}
	// Persisted outside the lock: bbolt serialises writers itself, and a
	// slow fsync must not block readers of other operations.
	if err := e.store.Update(func(tx *store.Tx) error { return tx.PutOperation(snap) }); err != nil {
		e.log.Error("persist operation", "op", op.id, "error", err)
	}
}

func clone(o store.Operation) store.Operation {
	o.Stages = append([]store.Stage(nil), o.Stages...)
	return o
}

// Get returns an operation, live or finished, and for a live one a
// channel closed at its next change.
func (e *Engine) Get(id string) (store.Operation, <-chan struct{}, error) {
	e.mu.Lock()
	if live, ok := e.running[id]; ok {
		defer e.mu.Unlock()
		return clone(live.op), live.changed, nil
	}
	e.mu.Unlock()
	var op store.Operation
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		op, err = tx.Operation(id)
		return err
	})
	if err != nil {
		return op, nil, fmt.Errorf("operation %s: %w", id, err)
	}
	return op, nil, nil
}

// List returns the stored operations, oldest first, with running ones as
// they are now.
func (e *Engine) List() ([]store.Operation, error) {
	var list []store.Operation
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		list, err = tx.Operations()
		return err
	})
	e.mu.Lock()
	for i, op := range list {
		if live, ok := e.running[op.ID]; ok {
			list[i] = clone(live.op)
		}
	}
	e.mu.Unlock()
	return list, err
}

// OfInstance returns the operations of one instance, oldest first (as List), with
// running ones as they are now. An operation recorded with the instance's
// id is its; one recorded before ids were kept counts when it names the
// instance, acts on an instance (not an image) and began after the
// instance was created: the record is made before its create operation
// begins, and an earlier instance of the same name was gone by then.
func (e *Engine) OfInstance(id, name string, created time.Time) ([]store.Operation, error) {
	list, err := e.List()
	if err != nil {
		return nil, err
	}
	var out []store.Operation
	for _, op := range list {
		if belongs(op, id, name, created) {
			out = append(out, op)
		}
	}
	return out, nil
}

func belongs(op store.Operation, id, name string, created time.Time) bool {
	if op.InstanceID != "" {
		return op.InstanceID == id
	}
	switch api.OperationKind(op.Kind) {
	case api.OpImageImport, api.OpImagePull:
		return false
	}
	return op.Target == name && !op.CreatedAt.Before(created)
}

// Holder returns the operation holding an instance, if any.
func (e *Engine) Holder(instanceID string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id, ok := e.busy[instanceID]
	return id, ok
}

// Running counts the operations in flight.
func (e *Engine) Running() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.running)
}

// LastStep is the step an operation had reached.
func LastStep(op store.Operation) string {
	if n := len(op.Stages); n > 0 {
		if op.Stages[n-1].Step != "" {
			return op.Stages[n-1].Step
		}
		return op.Stages[n-1].Name
	}
	return "before its first step"
}

// RunningKind reports whether an operation of one of the kinds is running.
func (e *Engine) RunningKind(kinds ...string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, live := range e.running {
		for _, k := range kinds {
			if live.op.Kind == k {
				return true
			}
		}
	}
	return false
}
