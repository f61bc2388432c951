package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// releaseAddress frees inst's address, if inst still holds it, and takes
// it off the stored record in the same transaction: the allocation table
// and the records' addresses never disagree, even across a crash.
func releaseAddress(tx *store.Tx, inst *vm.Instance) error {
	if err := tx.ReleaseIPOf(inst.VNet, inst.IP, inst.ID); err != nil {
		return err
	}
	rec, err := tx.Instance(inst.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !rec.IP.IsValid() {
		return nil
	}
	rec.IP = netip.Addr{}
	return tx.PutInstance(rec)
}

// resumeBoot finishes a start or restart that a crash interrupted, under
// a new operation: it destroys the domain found (fresh: a restart may have
// been caught with the old guest still shutting down), boots the domain
// from the record and waits for the guest. If the domain cannot start the
// instance rests Stopped with the reason.
func (d *Daemon) resumeBoot(inst vm.Instance, kind api.OperationKind, fresh bool) error {
	op, err := d.ops.begin(kind, inst.Name, inst.ID, Caller{Name: "labvmd"})
	if err != nil {
		return err
	}
	d.log.Info("resuming interrupted "+string(kind), "instance", inst.Name, "state", inst.State)
	d.goOp(op, func(ctx context.Context, op *Op) error {
		if fresh {
			op.Stage("Deallocating", "destroying the domain found at daemon start")
			if err := d.hv.Destroy(ctx, inst.Domain); err != nil {
				d.setState(&inst, vm.StateUnknown, err.Error())
				return fmt.Errorf("destroy domain of %s: %w", inst.Name, err)
			}
		}
		if err := d.bootDomain(ctx, op, inst); err != nil {
			d.setState(&inst, vm.StateStopped, err.Error())
			return err
		}
		return d.settle(ctx, op, &inst)
	})
	return nil
}

// lastStage names where an interrupted operation stopped, for its error.
func lastStage(op api.Operation) string {
	if n := len(op.Stages); n > 0 {
		return fmt.Sprintf(" (at stage %q)", op.Stages[n-1].Name)
	}
	return ""
}

// warnUnowned logs, once at start, instance directories that no record
// owns but whose manifest could bring them back: after a lost or replaced
// database the admin must hear about it before anything else happens.
func (d *Daemon) warnUnowned(known map[string]bool) {
	entries, err := os.ReadDir(d.cfg.instancesDir())
	if err != nil {
		d.log.Warn("list instance directories", "error", err)
		return
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() || known[e.Name()] {
			continue
		}
		if _, err := d.readManifest(e.Name()); err == nil {
			n++
		}
	}
	if n > 0 {
		d.log.Error("instance directories with manifests but no record: run `labvm doctor --rebuild` to recover them", "count", n, "dir", d.cfg.instancesDir())
	}
}
