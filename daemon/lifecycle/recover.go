package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// ReleaseAddress frees inst's address, if inst still holds it, and takes
// it off the stored record in the same transaction: the allocation table
// and the records' addresses never disagree, even across a crash.
func ReleaseAddress(tx *store.Tx, inst *vm.Instance) error {
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
func (e *Engine) resumeBoot(inst vm.Instance, kind api.OperationKind, fresh bool) error {
	op, err := e.ops.Begin(kind, inst.Name, inst.ID, system())
	if err != nil {
		return err
	}
	e.log.Info("resuming interrupted "+string(kind), "instance", inst.Name, "state", inst.State)
	e.ops.Go(op, func(ctx context.Context, op *ops.Op) error {
		if fresh {
			op.Stage(StepDealloc, "destroying the domain found at daemon start")
			if err := e.hv.Destroy(ctx, inst.Domain); err != nil {
				return e.fail(&inst, vm.StateUnknown, fmt.Errorf("destroy domain of %s: %w", inst.Name, err))
			}
		}
		if err := e.bootDomain(ctx, op, inst); err != nil {
			return e.fail(&inst, vm.StateStopped, err)
		}
		return e.settle(ctx, op, &inst)
	})
	return nil
}

// warnUnowned logs, once at start, instance directories that no record
// owns but whose manifest could bring them back: after a lost or replaced
// database the admin must hear about it before anything else happens.
func (e *Engine) warnUnowned(known map[string]bool) {
	entries, err := os.ReadDir(e.paths.Instances())
	if err != nil {
		e.log.Warn("list instance directories", "error", err)
		return
	}
	n := 0
	for _, ent := range entries {
		if !ent.IsDir() || known[ent.Name()] {
			continue
		}
		if _, err := e.ReadManifest(ent.Name()); err == nil {
			n++
		}
	}
	if n > 0 {
		e.log.Error("instance directories with manifests but no record: run `labvm doctor --rebuild` to recover them", "count", n, "dir", e.paths.Instances())
	}
}
