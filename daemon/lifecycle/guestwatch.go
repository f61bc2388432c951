package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// The guest watcher notices a guest that powered itself off (`sudo
// poweroff` in the guest) or whose QEMU died. labvm's domains are
// transient, so libvirt simply forgets the domain; without the watcher
// the record kept saying Running until the next daemon start.
//
// It polls: every Config.GuestWatch it reads the instance records that
// expect a domain (Running, SetupFailed) and no operation holds, then
// lists the running domains' names in one libvirt call, and stops each
// instance whose domain is missing as an ordinary stop operation done by
// "guest". The records are read BEFORE the domains are listed, and an
// instance is stopped only if its record is unchanged (the same
// UpdatedAt) when its stop claims it: a start or restart that ran in
// between changed the record, so its domain is never mistaken for a
// vanished guest.

// ActorGuest is who the watcher's stops are recorded as done by, in the
// operation list and the audit log.
const ActorGuest = "guest"

// DefaultGuestWatch is how often the guest watcher looks.
const DefaultGuestWatch = 5 * time.Second

// auditStop is the audit name of a stop, the same as the API's.
const auditStop = "computes/stop/action"

// GuestGoneReason is the state reason of an instance whose guest powered
// itself off.
func GuestGoneReason(name string) string {
	return fmt.Sprintf("the guest powered itself off (or QEMU exited); `labvm start %s` boots it again, `labvm logs %s` shows its console", name, name)
}

// expectsDomain are the steady states whose instance has a domain.
var expectsDomain = []vm.State{vm.StateRunning, vm.StateSetupFailed}

// WatchGuests starts the guest watcher; it stops when ctx ends and the
// returned function waits for it.
func (e *Engine) WatchGuests(ctx context.Context) (wait func()) {
	every := e.cfg.GuestWatch
	if every <= 0 {
		every = DefaultGuestWatch
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		var w guestWatch
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			e.lookForGoneGuests(ctx, &w)
		}
	}()
	return func() { <-done }
}

// guestWatch is what the watcher remembers between looks.
type guestWatch struct {
	// failing is set while libvirt cannot be listed: logged once when
	// it starts and once when it ends, not at every look.
	failing bool
}

// lookForGoneGuests is one look.
func (e *Engine) lookForGoneGuests(ctx context.Context, w *guestWatch) {
	// Records first (see the rule above). The snapshot's records are
	// shared and immutable: the candidates point into it, so a look at
	// 10,000 running instances copies none (copies cost labvmd ~14 MB of
	// RSS at that scale, measured).
	var candidates []*vm.Instance
	for _, inst := range e.store.InstanceSnapshot() {
		if slices.Contains(expectsDomain, inst.State) {
			candidates = append(candidates, inst)
		}
	}
	if len(candidates) == 0 {
		return // nothing runs: no call to libvirt either
	}
	active, err := e.hv.ActiveDomainNames(ctx)
	if err != nil {
		if !w.failing && ctx.Err() == nil {
			e.log.Warn("guest watcher: cannot list the running domains; trying again at every look", "error", err)
		}
		w.failing = true
		return
	}
	if w.failing {
		e.log.Info("guest watcher: libvirt answers again")
		w.failing = false
	}
	for _, inst := range candidates {
		if active[inst.Domain] {
			continue
		}
		if _, busy := e.ops.Holder(inst.ID); busy {
			continue // the operation decides; the next look sees its outcome
		}
		if _, err := e.guestGone(ctx, *inst); err != nil && !errors.Is(err, ErrRecordChanged) && !errors.Is(err, ops.ErrBusy) {
			e.log.Warn("guest watcher: could not record a vanished guest as stopped; trying again at the next look", "instance", inst.Name, "error", err)
		}
	}
}

// guestGone stops an instance whose domain vanished: an ordinary stop
// (running jobs cancelled, dataset mounts released, disk and address
// kept) done by "guest", if the record is still the one seen.
func (e *Engine) guestGone(ctx context.Context, seen vm.Instance) (store.Operation, error) {
	// The domain itself, asked by name, must be gone too: a stop of a
	// domain that runs would shut a working guest down, and the look's
	// list is kept by libvirt ids, which a restarted libvirtd may reuse.
	if st, err := e.hv.DomainState(ctx, seen.Domain); err != nil {
		return store.Operation{}, fmt.Errorf("state of %s's domain: %w", seen.Name, err)
	} else if st != vm.DomainAbsent {
		return store.Operation{}, fmt.Errorf("%w: its domain runs", ErrRecordChanged)
	}
	// A cheap look before the claim keeps a record changed meanwhile
	// from leaving a failed operation behind; the claim checks again.
	cur, err := e.instanceByID(seen.ID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Operation{}, fmt.Errorf("%w: deleted", ErrRecordChanged)
	}
	if err != nil {
		return store.Operation{}, err
	}
	if !cur.UpdatedAt.Equal(seen.UpdatedAt) {
		return store.Operation{}, ErrRecordChanged
	}
	who := ops.Who{Name: ActorGuest}
	op, err := e.ActFor(PolicyAction{
		Who: who, Action: vm.ActionStop, OnlyFrom: expectsDomain, Unchanged: true,
		Reason: GuestGoneReason(seen.Name),
	}, seen)
	if err != nil {
		return op, err
	}
	e.ops.NoteAudit(op.ID, auditStop, seen.Name, who)
	e.log.Info("guest watcher: the guest powered itself off (or QEMU exited); recording the instance as stopped", "instance", seen.Name, "was", seen.State, "operation", op.ID)
	return op, nil
}

// instanceByID reads one instance record.
func (e *Engine) instanceByID(id string) (vm.Instance, error) {
	var inst vm.Instance
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		inst, err = tx.Instance(id)
		return err
	})
	return inst, err
}
