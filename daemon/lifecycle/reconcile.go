package lifecycle

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// reconcile brings the store and libvirt into agreement at daemon start.
// The store is the desired state; an instance found in a transitional
// state means the daemon died mid-operation, and that operation is
// finished or rolled back here. Nothing is dropped silently: a record
// whose disk is gone is kept and marked Unknown with the reason.
func (e *Engine) reconcile(ctx context.Context) error {
	domains, err := e.hv.OwnedDomains(ctx)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	running := map[string]vm.DomainStatus{}
	for _, dom := range domains {
		running[dom.InstanceID] = dom.Status
	}
	list, err := e.Instances()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, inst := range list {
		known[inst.ID] = true
		_, hasDomain := running[inst.ID]
		// Manifests of instances made before manifests existed, or
		// whose last write a crash cut short, are brought up to date.
		e.KeepManifest(inst)
		if err := e.reconcileInstance(ctx, inst, hasDomain); err != nil {
			e.log.Error("reconcile instance", "instance", inst.Name, "error", err)
		}
	}
	for _, dom := range domains {
		if !known[dom.InstanceID] {
			e.log.Warn("domain carries labvm metadata but no instance owns it; left alone (`labvm doctor` tells whether it is this daemon's)", "domain", dom.Name, "instance_id", dom.InstanceID)
		}
	}
	e.warnUnowned(known)
	// Operations that were running when the daemon died can never finish.
	return e.store.Update(func(tx *store.Tx) error {
		list, err := tx.Operations()
		if err != nil {
			return err
		}
		for _, op := range list {
			if op.DoneAt == nil {
				now := time.Now().UTC()
				op.Status, op.DoneAt = ops.StatusFailed, &now
				op.Error = &store.OperationError{Code: string(api.CodeUnavailable),
					Message: fmt.Sprintf("labvmd stopped while this operation ran (at step %q); the instance was reconciled at restart", ops.LastStep(op))}
				if err := tx.PutOperation(op); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (e *Engine) reconcileInstance(ctx context.Context, inst vm.Instance, hasDomain bool) error {
	_, diskErr := os.Stat(e.paths.Disk(inst.ID))
	diskMissing := os.IsNotExist(diskErr)
	switch {
	case inst.State == vm.StateCreating:
		e.log.Info("rolling back interrupted create", "instance", inst.Name)
		e.rollbackCreate(ctx, &inst)
		return e.setState(&inst, vm.StateCreateFailed, "labvmd stopped during create; delete the instance and create it again")
	case inst.State == vm.StateDeleting:
		e.log.Info("finishing interrupted delete", "instance", inst.Name)
		if err := e.hv.Destroy(ctx, inst.Domain); err != nil {
			return err
		}
		if err := e.removeInstanceFiles(inst.ID); err != nil {
			return err
		}
		if err := e.deleteRecord(inst); err != nil {
			return err
		}
		if err := e.nets.RemoveInstancePort(ctx, inst); err != nil {
			// Harmless: a stale entry for a port nobody has goes at the
			// next full sync.
			e.log.Warn("unlock the port of an interrupted delete", "instance", inst.Name, "error", err)
		}
		return nil
	case inst.State == vm.StateCreateFailed:
		// Idempotent: a crash during an earlier rollback left some of it.
		e.rollbackCreate(ctx, &inst)
		return nil
	case diskMissing:
		if hasDomain {
			// The state below says the instance needs attention either
			// way; a domain left running is worth a line in the log.
			if err := e.hv.Destroy(ctx, inst.Domain); err != nil {
				e.log.Warn("destroy domain of instance whose disk is missing", "instance", inst.Name, "error", err)
			}
		}
		return e.setState(&inst, vm.StateUnknown, fmt.Sprintf("disk %s is missing", e.paths.Disk(inst.ID)))
	case inst.State == vm.StateRestarting:
		// Whether the domain is the old guest shutting down or the new
		// one booting, a fresh boot is what the restart asked for.
		return e.resumeBoot(inst, api.OpRestart, hasDomain)
	case !hasDomain && inst.State == vm.StateStarting:
		// The start stopped before its domain ran: finish it.
		return e.resumeBoot(inst, api.OpStart, false)
	case hasDomain && (inst.State == vm.StateSettingUp || inst.State == vm.StateStarting):
		// The guest is booting: wait for it again under a new operation.
		op, err := e.ops.Begin(api.OpStart, inst.Name, inst.ID, system())
		if err != nil {
			return err
		}
		e.ops.Go(op, func(ctx context.Context, op *ops.Op) error { return e.settle(ctx, op, &inst) })
		return nil
	case hasDomain && inst.State == vm.StateStopping:
		if err := e.hv.Destroy(ctx, inst.Domain); err != nil {
			return err
		}
		return e.setState(&inst, vm.StateStopped, "")
	case hasDomain && (inst.State == vm.StateStopped || inst.State == vm.StateUnknown):
		return e.setState(&inst, vm.StateRunning, "found running at daemon start")
	case !hasDomain && inst.State != vm.StateStopped:
		// The host rebooted without a clean shutdown, or QEMU died: an
		// instance that was running comes back unless told not to.
		inst.RestartPending = inst.State == vm.StateRunning && !inst.NoAutostart
		return e.setState(&inst, vm.StateStopped, fmt.Sprintf("found not running at daemon start (was %s)", inst.State))
	}
	return nil
}
