package lifecycle

import (
	"context"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/vm"
)

// shutdownInstances stops every running instance cleanly and in parallel
// when the host goes down (labvmd runs with --stop-instances-on-exit, or
// is told of a host shutdown). Each gets the guest's ACPI shutdown up to
// bound, then is destroyed; all are marked to start again at the next
// daemon start. It never deletes anything.
func (e *Engine) shutdownInstances(ctx context.Context, bound time.Duration) {
	list, err := e.Instances()
	if err != nil {
		e.log.Error("host shutdown: list instances", "error", err)
		return
	}
	var wg sync.WaitGroup
	for _, inst := range list {
		if inst.State != vm.StateRunning && inst.State != vm.StateSettingUp && inst.State != vm.StateSetupFailed {
			continue
		}
		op, err := e.ops.Begin(api.OpStop, inst.Name, inst.ID, system())
		if err != nil {
			e.log.Warn("host shutdown: instance busy; leaving it to reconcile", "instance", inst.Name, "error", err)
			continue
		}
		wg.Add(1)
		go func(inst vm.Instance) {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, bound)
			defer cancel()
			err := e.shutdownDomain(sctx, op, inst)
			if err == nil {
				inst.RestartPending = !inst.NoAutostart
				err = e.setState(&inst, vm.StateStopped, "stopped by host shutdown")
			}
			if err != nil {
				e.log.Error("host shutdown: stop instance", "instance", inst.Name, "error", err)
			}
			op.Finish(err)
		}(inst)
	}
	wg.Wait()
}

// autostart starts the instances a host shutdown (or crash) stopped.
func (e *Engine) autostart() {
	list, err := e.Instances()
	if err != nil {
		e.log.Error("autostart: list instances", "error", err)
		return
	}
	for _, inst := range list {
		if !inst.RestartPending || inst.State != vm.StateStopped {
			continue
		}
		op, err := e.ops.Begin(api.OpStart, inst.Name, inst.ID, system())
		if err != nil {
			continue
		}
		inst.RestartPending = false
		if err := e.setState(&inst, vm.StateStarting, "autostart after a host restart"); err != nil {
			op.Finish(err)
			continue
		}
		e.log.Info("autostart", "instance", inst.Name)
		e.ops.Go(op, func(ctx context.Context, op *ops.Op) error { return e.runStart(ctx, op, inst) })
	}
}

// HostShutdown is what POST /v1/host/shutdown asks: the host is going
// down, so stop every running instance cleanly now and bring them back at
// the next start. labvm-guests.service calls it on the way down, the way
// libvirt-guests does, so a plain restart of labvmd never touches VMs.
// logind's PrepareForShutdown (through labvmd's delay inhibitor) asks the
// same earlier; a second call waits for the first, then finds nothing
// left running.
func (e *Engine) HostShutdown(ctx context.Context, bound time.Duration) {
	e.hostShutdown.Lock()
	defer e.hostShutdown.Unlock()
	e.shutdownInstances(ctx, bound)
}
