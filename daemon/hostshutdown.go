package daemon

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/vm"
)

// shutdownInstances stops every running instance cleanly and in parallel
// when the host goes down (labvmd runs with --stop-instances-on-exit, or
// is told of a host shutdown). Each gets the guest's ACPI shutdown up to
// bound, then is destroyed; all are marked to start again at the next
// daemon start. It never deletes anything.
func (d *Daemon) shutdownInstances(ctx context.Context, bound time.Duration) {
	list, err := d.instances()
	if err != nil {
		d.log.Error("host shutdown: list instances", "error", err)
		return
	}
	var wg sync.WaitGroup
	for _, inst := range list {
		if inst.State != vm.StateRunning && inst.State != vm.StateSettingUp && inst.State != vm.StateSetupFailed {
			continue
		}
		op, err := d.ops.begin(api.OpStop, inst.Name, inst.ID, Caller{Name: "labvmd"})
		if err != nil {
			d.log.Warn("host shutdown: instance busy; leaving it to reconcile", "instance", inst.Name, "error", err)
			continue
		}
		wg.Add(1)
		go func(inst vm.Instance) {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, bound)
			defer cancel()
			err := d.shutdownDomain(sctx, op, inst)
			if err == nil {
				inst.RestartPending = !inst.NoAutostart
				err = d.setState(&inst, vm.StateStopped, "stopped by host shutdown")
			}
			if err != nil {
				d.log.Error("host shutdown: stop instance", "instance", inst.Name, "error", err)
			}
			op.Finish(err)
		}(inst)
	}
	wg.Wait()
}

// autostart starts the instances a host shutdown (or crash) stopped.
func (d *Daemon) autostart() {
	list, err := d.instances()
	if err != nil {
		d.log.Error("autostart: list instances", "error", err)
		return
	}
	for _, inst := range list {
		if !inst.RestartPending || inst.State != vm.StateStopped {
			continue
		}
		op, err := d.ops.begin(api.OpStart, inst.Name, inst.ID, Caller{Name: "labvmd"})
		if err != nil {
			continue
		}
		inst.RestartPending = false
		if err := d.setState(&inst, vm.StateStarting, "autostart after a host restart"); err != nil {
			op.Finish(err)
			continue
		}
		d.log.Info("autostart", "instance", inst.Name)
		d.goOp(op, func(ctx context.Context, op *Op) error { return d.runStart(ctx, op, inst) })
	}
}

// hostShutdown is POST /v1/host/shutdown: the host is going down, so stop
// every running instance cleanly now and bring them back at the next
// start. labvm-guests.service calls it on the way down, the way
// libvirt-guests does, so a plain restart of labvmd never touches VMs.
func (d *Daemon) hostShutdown(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermManageRoles); err != nil {
		return response{}, err
	}
	d.shutdownInstances(r.Context(), d.cfg.HostShutdownBound)
	return ok(map[string]string{"result": "running instances shut down; they start again at the next labvmd start"}), nil
}
