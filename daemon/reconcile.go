package daemon

import (
	"context"
	"fmt"
	"os"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// reconcile brings the store and libvirt into agreement at daemon start.
// The store is the desired state; an instance found in a transitional
// state means the daemon died mid-operation, and that operation is
// finished or rolled back here. Nothing is dropped silently: a record
// whose disk is gone is kept and marked Unknown with the reason.
func (d *Daemon) reconcile(ctx context.Context) error {
	domains, err := d.hv.OwnedDomains(ctx)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	running := map[string]vm.DomainStatus{}
	for _, dom := range domains {
		running[dom.InstanceID] = dom.Status
	}
	list, err := d.instances()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, inst := range list {
		known[inst.ID] = true
		_, hasDomain := running[inst.ID]
		// Manifests of instances made before manifests existed, or
		// whose last write a crash cut short, are brought up to date.
		d.keepManifest(inst)
		if err := d.reconcileInstance(ctx, inst, hasDomain); err != nil {
			d.log.Error("reconcile instance", "instance", inst.Name, "error", err)
		}
	}
	for _, dom := range domains {
		if !known[dom.InstanceID] {
			d.log.Warn("domain carries labvm metadata but no instance owns it; left alone (`labvm doctor` tells whether it is this daemon's)", "domain", dom.Name, "instance_id", dom.InstanceID)
		}
	}
	d.warnUnowned(known)
	// Operations that were running when the daemon died can never finish.
	return d.store.Update(func(tx *store.Tx) error {
		ops, err := tx.Operations()
		if err != nil {
			return err
		}
		for _, op := range ops {
			if op.Status == api.OperationRunning {
				op.Status = api.OperationFailed
				op.Error = api.Errorf(api.CodeUnavailable, "labvmd stopped while this operation ran%s; the instance was reconciled at restart", lastStage(op))
				if err := tx.PutOperation(op); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (d *Daemon) reconcileInstance(ctx context.Context, inst vm.Instance, hasDomain bool) error {
	_, diskErr := os.Stat(d.diskPath(inst.ID))
	diskMissing := os.IsNotExist(diskErr)
	switch {
	case inst.State == vm.StateCreating:
		d.log.Info("rolling back interrupted create", "instance", inst.Name)
		d.rollbackCreate(ctx, &inst)
		return d.setState(&inst, vm.StateCreateFailed, "labvmd stopped during create; delete the instance and create it again")
	case inst.State == vm.StateDeleting:
		d.log.Info("finishing interrupted delete", "instance", inst.Name)
		if err := d.hv.Destroy(ctx, inst.Domain); err != nil {
			return err
		}
		if err := d.removeInstanceFiles(inst.ID); err != nil {
			return err
		}
		return d.deleteRecord(inst)
	case inst.State == vm.StateCreateFailed:
		// Idempotent: a crash during an earlier rollback left some of it.
		d.rollbackCreate(ctx, &inst)
		return nil
	case diskMissing:
		if hasDomain {
			d.hv.Destroy(ctx, inst.Domain)
		}
		return d.setState(&inst, vm.StateUnknown, fmt.Sprintf("disk %s is missing", d.diskPath(inst.ID)))
	case inst.State == vm.StateRestarting:
		// Whether the domain is the old guest shutting down or the new
		// one booting, a fresh boot is what the restart asked for.
		return d.resumeBoot(inst, api.OpRestart, hasDomain)
	case !hasDomain && inst.State == vm.StateStarting:
		// The start stopped before its domain ran: finish it.
		return d.resumeBoot(inst, api.OpStart, false)
	case hasDomain && (inst.State == vm.StateSettingUp || inst.State == vm.StateStarting):
		// The guest is booting: wait for it again under a new operation.
		op, err := d.ops.begin(api.OpStart, inst.Name, inst.ID, Caller{Name: "labvmd"})
		if err != nil {
			return err
		}
		d.goOp(op, func(ctx context.Context, op *Op) error { return d.settle(ctx, op, &inst) })
		return nil
	case hasDomain && inst.State == vm.StateStopping:
		if err := d.hv.Destroy(ctx, inst.Domain); err != nil {
			return err
		}
		return d.setState(&inst, vm.StateStopped, "")
	case hasDomain && (inst.State == vm.StateStopped || inst.State == vm.StateUnknown):
		return d.setState(&inst, vm.StateRunning, "found running at daemon start")
	case !hasDomain && inst.State != vm.StateStopped:
		// The host rebooted without a clean shutdown, or QEMU died: an
		// instance that was running comes back unless told not to.
		inst.RestartPending = inst.State == vm.StateRunning && !inst.NoAutostart
		return d.setState(&inst, vm.StateStopped, fmt.Sprintf("found not running at daemon start (was %s)", inst.State))
	}
	return nil
}
