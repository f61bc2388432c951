package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
)

// operations tracks running operations, persists every change, and lets
// clients wait on them. Finished operations live only in the store.
type operations struct {
	store *store.Store
	log   *slog.Logger

	mu sync.Mutex
	// running maps an operation id to its live state.
	running map[string]*liveOp
	// busy maps an instance id to the operation holding it: one operation
	// per instance at a time.
	busy map[string]string
	// onAudit records an ended operation in the audit log.
	onAudit func(c Caller, action, target, opID string, err error)
	// crash is the test-only fault injector (nil in production).
	crash *crashPoint
	// events fans every change out to `labvm events`.
	events eventBus
}

type liveOp struct {
	op api.Operation
	// audit, when set, is written to the audit log as the operation ends.
	audit *opAudit
	// changed is closed and replaced on every change, waking all waiters.
	changed chan struct{}
	// persisted is when the operation was last written to the store.
	persisted time.Time
}

// persistEvery bounds how often a running operation's progress (a stage's
// detail) is written to the store, each write being an fsync. Running
// operations are served from memory; the stored copy matters only after
// a crash, so it may lag by this much. The start, every new stage and the
// end of an operation are always written at once (see update).
const persistEvery = time.Second

type opAudit struct {
	action, target string
	caller         Caller
}

// noteAudit asks for the operation's outcome to be audited when it ends.
// If it already ended, it is audited now.
func (o *operations) noteAudit(id, action, target string, c Caller) {
	o.mu.Lock()
	live, running := o.running[id]
	if running {
		live.audit = &opAudit{action: action, target: target, caller: c}
	}
	o.mu.Unlock()
	if !running && o.onAudit != nil {
		op, _, err := o.get(id)
		if err == nil {
			var opErr error
			if op.Error != nil {
				opErr = op.Error
			}
			o.onAudit(c, action, target, id, opErr)
		}
	}
}

func newOperations(s *store.Store, log *slog.Logger) *operations {
	return &operations{store: s, log: log, running: map[string]*liveOp{}, busy: map[string]string{}}
}

func newOpID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// Op is the handle an operation's goroutine reports through.
type Op struct {
	ops *operations
	id  string
	// instanceID is the instance this operation holds, if any.
	instanceID string
}

// begin registers a new operation, claiming instanceID (if non-empty)
// for it. A second operation on a busy instance gets a Conflict naming
// the first.
func (o *operations) begin(kind api.OperationKind, target, instanceID string, c Caller) (*Op, error) {
	o.mu.Lock()
	if instanceID != "" {
		if holder, ok := o.busy[instanceID]; ok {
			kind := o.running[holder].op.Kind
			o.mu.Unlock()
			return nil, fmt.Errorf("%s is busy with operation %s (%s): %w", target, holder, kind, errBusy)
		}
	}
	op := api.Operation{
		ID:        newOpID(),
		Kind:      kind,
		Target:    target,
		Caller:    c.Name,
		Status:    api.OperationRunning,
		Stages:    []api.Stage{},
		CreatedAt: time.Now().UTC(),
	}
	// Claim first, persist outside the lock: holding o.mu across a bbolt
	// commit (which waits for every other writer) stalled every
	// operation's progress and every waiter behind it.
	o.running[op.ID] = &liveOp{op: op, changed: make(chan struct{}), persisted: time.Now()}
	if instanceID != "" {
		o.busy[instanceID] = op.ID
	}
	o.mu.Unlock()
	if err := o.store.Update(func(tx *store.Tx) error { return tx.PutOperation(op) }); err != nil {
		o.mu.Lock()
		delete(o.running, op.ID)
		if instanceID != "" && o.busy[instanceID] == op.ID {
			delete(o.busy, instanceID)
		}
		o.mu.Unlock()
		return nil, fmt.Errorf("record operation: %w", err)
	}
	o.events.publish(op)
	return &Op{ops: o, id: op.ID, instanceID: instanceID}, nil
}

// ID is the operation's id.
func (op *Op) ID() string { return op.id }

// Snapshot returns the operation as it is now.
func (op *Op) Snapshot() api.Operation {
	op.ops.mu.Lock()
	defer op.ops.mu.Unlock()
	return cloneOp(op.ops.running[op.id].op)
}

// Stage marks the previous stage done and starts a new one. Both are
// written to the store at once (see update), so the stage log is the
// operation's intent and progress as of a crash.
func (op *Op) Stage(name, detail string) {
	op.crashCheck(false)
	op.update(func(o *api.Operation, now time.Time) {
		closeStage(o, now)
		o.Stages = append(o.Stages, api.Stage{Name: name, Detail: detail, StartedAt: now})
	})
	op.crashCheck(true)
}

// Progress replaces the current stage's detail, so a long stage (a
// download) can say how far it got without adding stages. Writes to the
// store are throttled by update (persistEvery).
func (op *Op) Progress(detail string) {
	op.update(func(o *api.Operation, now time.Time) {
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
	o := op.ops
	o.mu.Lock()
	if op.instanceID != "" && o.busy[op.instanceID] == op.id {
		delete(o.busy, op.instanceID)
	}
	o.mu.Unlock()
	op.update(func(o *api.Operation, now time.Time) {
		closeStage(o, now)
		o.DoneAt = &now
		o.Status = api.OperationSucceeded
		if err != nil {
			o.Status = api.OperationFailed
			o.Error = toAPIError(err)
		}
	})
	o.mu.Lock()
	audit := o.running[op.id].audit
	delete(o.running, op.id)
	o.mu.Unlock()
	if audit != nil && o.onAudit != nil {
		o.onAudit(audit.caller, audit.action, audit.target, op.id, err)
	}
}

func closeStage(o *api.Operation, now time.Time) {
	if n := len(o.Stages); n > 0 && o.Stages[n-1].DoneAt == nil {
		o.Stages[n-1].DoneAt = &now
	}
}

func (op *Op) update(fn func(o *api.Operation, now time.Time)) {
	o := op.ops
	o.mu.Lock()
	live := o.running[op.id]
	stages := len(live.op.Stages)
	fn(&live.op, time.Now().UTC())
	snap := cloneOp(live.op)
	close(live.changed)
	live.changed = make(chan struct{})
	// A new stage is written at once: it records the step's intent and
	// the previous step's completion, which reconcile reads after a crash.
	persist := snap.Status.Done() || len(snap.Stages) != stages || time.Since(live.persisted) >= persistEvery
	if persist {
		live.persisted = time.Now()
	}
	o.mu.Unlock()
	o.events.publish(snap)
	if !persist {
		return
	}
	// Persisted outside the lock: bbolt serialises writers itself, and a
	// slow fsync must not block readers of other operations.
	if err := o.store.Update(func(tx *store.Tx) error { return tx.PutOperation(snap) }); err != nil {
		o.log.Error("persist operation", "op", op.id, "error", err)
	}
}

func cloneOp(o api.Operation) api.Operation {
	o.Stages = append([]api.Stage(nil), o.Stages...)
	return o
}

// get returns an operation, live or finished.
func (o *operations) get(id string) (api.Operation, <-chan struct{}, error) {
	o.mu.Lock()
	if live, ok := o.running[id]; ok {
		defer o.mu.Unlock()
		return cloneOp(live.op), live.changed, nil
	}
	o.mu.Unlock()
	var op api.Operation
	err := o.store.View(func(tx *store.Tx) error {
		var err error
		op, err = tx.Operation(id)
		return err
	})
	if err != nil {
		return op, nil, fmt.Errorf("operation %s: %w", id, err)
	}
	return op, nil, nil
}

// holder returns the operation holding an instance, if any.
func (o *operations) holder(instanceID string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	id, ok := o.busy[instanceID]
	return id, ok
}

func (d *Daemon) listOperations(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermRead); err != nil {
		return response{}, err
	}
	var ops []api.Operation
	err := d.store.View(func(tx *store.Tx) error {
		var err error
		ops, err = tx.Operations()
		return err
	})
	if ops == nil {
		ops = []api.Operation{}
	}
	return ok(ops), err
}

func (d *Daemon) getOperation(r *http.Request, c Caller) (response, error) {
	op, _, err := d.ops.get(r.PathValue("id"))
	if err == nil && op.Caller != c.Name {
		err = d.authorize(c, PermRead)
	}
	return ok(op), err
}

// waitOperation streams the operation as newline-delimited JSON: one
// object now and one per change, until it is done or the client leaves.
func (d *Daemon) waitOperation(w http.ResponseWriter, r *http.Request, c Caller) error {
	id := r.PathValue("id")
	op, changed, err := d.ops.get(id)
	if err != nil {
		return err
	}
	if op.Caller != c.Name {
		if err := d.authorize(c, PermRead); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	for {
		if err := enc.Encode(op); err != nil {
			return nil // client gone; nothing to report to it
		}
		if flusher != nil {
			flusher.Flush()
		}
		if op.Status.Done() || changed == nil {
			return nil
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return nil
		}
		if op, changed, err = d.ops.get(id); err != nil {
			return nil
		}
	}
}
