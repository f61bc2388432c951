package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

// runCreate makes the disk and seed, boots the domain and waits for the
// guest. Until the domain runs, any failure rolls back everything made so
// far and leaves the record as CreateFailed with the reason; a guest that
// boots but never becomes ready is SetupFailed and keeps its disk for
// inspection.
// seedSecrets is what a create hands the guest once, in its seed, and
// keeps nowhere else: the scripts' text and the private SSH host key.
type seedSecrets struct {
	scripts storage.Scripts
	hostKey storage.SSHHostKey
}

func (e *Engine) runCreate(ctx context.Context, op *ops.Op, inst vm.Instance, secrets seedSecrets) error {
	if err := e.provision(ctx, op, inst, secrets); err != nil {
		// The rollback must run even when ctx was cancelled mid-step.
		e.rollbackCreate(context.WithoutCancel(ctx), &inst)
		if serr := e.setState(&inst, vm.StateCreateFailed, err.Error()); serr != nil {
			e.log.Error("record CreateFailed", "instance", inst.Name, "error", serr)
		}
		return err
	}
	return e.settle(ctx, op, &inst)
}

func (e *Engine) provision(ctx context.Context, op *ops.Op, inst vm.Instance, secrets seedSecrets) error {
	var img store.Image
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		img, err = tx.Image(inst.Image)
		return err
	})
	if err != nil {
		return fmt.Errorf("image %s: %w", inst.Image, err)
	}
	if err := storage.EnsurePrivateDir(e.paths.Dir(inst.ID)); err != nil {
		return fmt.Errorf("create instance dir: %w", err)
	}
	// Before the disk: no disk is ever without the record that explains it.
	if err := e.writeManifest(inst); err != nil {
		return err
	}

	op.Stage(StepDisk, fmt.Sprintf("%s qcow2 overlay on %s", storage.FormatSize(inst.DiskSize), inst.Image))
	if err := storage.CreateOverlay(ctx, storage.OverlayOptions{
		Path: e.paths.Disk(inst.ID), BackingFile: img.Path, BackingFormat: "qcow2", Size: inst.DiskSize,
	}); err != nil {
		return fmt.Errorf("create disk for %s: %w", inst.Name, err)
	}

	op.Stage(StepSeed, "NoCloud cidata: meta-data, user-data, network-config v2")
	spec := e.seedSpec(inst)
	spec.Scripts = secrets.scripts
	spec.HostKey = &secrets.hostKey
	if err := storage.WriteSeed(ctx, e.paths.Seed(inst.ID), spec); err != nil {
		return fmt.Errorf("write seed for %s: %w", inst.Name, err)
	}
	if err := e.nets.AddInstancePort(ctx, inst); err != nil {
		return fmt.Errorf("firewall for %s: %w", inst.Name, err)
	}
	return e.bootDomain(ctx, op, inst)
}

func (e *Engine) seedSpec(inst vm.Instance) storage.SeedSpec {
	return storage.SeedSpec{
		InstanceID:        inst.ID,
		Hostname:          inst.Name,
		User:              inst.GuestUser,
		SSHAuthorizedKeys: inst.SSHAuthorizedKeys,
		MAC:               inst.MAC,
		Address:           netipPrefix(inst),
		Gateway:           inst.Gateway,
		DNS:               inst.DNS,
		PhoneHomeURL:      e.phoneHomeURL(inst),
		Datasets:          inst.Datasets,
	}
}

// bootDomain starts the instance's transient domain, its datasets
// mounted first; a failure leaves neither mounted.
func (e *Engine) bootDomain(ctx context.Context, op *ops.Op, inst vm.Instance) error {
	op.Stage(StepBoot, fmt.Sprintf("%s, %d vCPU, %d MiB, %s", inst.Domain, inst.Size.VCPUs, inst.Size.MemoryMiB, inst.Accel))
	shares, err := e.data.Attach(inst)
	if err != nil {
		return err
	}
	err = e.startDomain(ctx, inst, shares)
	if err != nil {
		e.data.Detach(inst)
	}
	return err
}

func (e *Engine) startDomain(ctx context.Context, inst vm.Instance, shares []vm.Share) error {
	xml, err := vm.DomainXML(vm.DomainSpec{
		Name:       inst.Domain,
		InstanceID: inst.ID,
		VCPUs:      inst.Size.VCPUs,
		MemoryMiB:  inst.Size.MemoryMiB,
		DiskPath:   e.paths.Disk(inst.ID),
		SeedPath:   e.paths.Seed(inst.ID),
		Bridge:     inst.Bridge,
		MAC:        inst.MAC,
		ConsoleLog: e.paths.Console(inst.ID),
		PortName:   network.PortName(inst.ID),
		Accel:      inst.Accel,
		Shares:     shares,
	})
	if err != nil {
		return fmt.Errorf("domain XML for %s: %w", inst.Name, err)
	}
	if err := e.hv.StartDomain(ctx, xml); err != nil {
		return fmt.Errorf("start domain for %s: %w", inst.Name, err)
	}
	return nil
}

// settle waits for a booted guest and records Running or SetupFailed:
// ready (see waitReady), then this boot's scripts; cloud-init's errors
// fail the boot once the scripts have been accounted for.
func (e *Engine) settle(ctx context.Context, op *ops.Op, inst *vm.Instance) error {
	phoned := e.ready.arm(inst.ID)
	inst.Provisioning = nil // a new boot: known again once the guest answers
	if err := e.setState(inst, vm.StateSettingUp, ""); err != nil {
		return err
	}
	op.Stage(StepWait, fmt.Sprintf("QEMU guest agent or cloud-init phone-home, up to %s", e.cfg.ReadyTimeout))
	ready, err := e.waitReady(ctx, &settleWatch{op: op, e: e, inst: inst}, *inst, phoned)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errdefs.ErrCancelled) {
			return e.cancelled(inst, cause)
		}
		if ctx.Err() != nil || errors.Is(err, ErrInterrupted) {
			// The daemon is stopping: reconcile resumes the wait.
			return fmt.Errorf("interrupted while waiting for %s: %w", inst.Name, err)
		}
		if serr := e.setState(inst, vm.StateSetupFailed, err.Error()); serr != nil {
			return serr
		}
		return err
	}
	if ready.cloudInit {
		inst.Provisioning = &vm.Provisioning{Status: vm.ProvisioningDone}
		if len(ready.errors) > 0 {
			inst.Provisioning = &vm.Provisioning{Status: vm.ProvisioningFailed, Errors: ready.errors}
		}
		e.saveCloudInitLog(ctx, *inst)
		if err := e.setState(inst, inst.State, inst.StateReason); err != nil {
			return err
		}
	}
	if err := e.awaitScripts(ctx, op, inst, phoned); err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errdefs.ErrCancelled) {
			return e.cancelled(inst, cause)
		}
		if ctx.Err() != nil || errors.Is(err, ErrInterrupted) {
			return fmt.Errorf("interrupted while waiting for %s's scripts: %w", inst.Name, err)
		}
		if len(ready.errors) > 0 {
			err = fmt.Errorf("%w; %w", err, provisionError(inst.Name, ready.errors))
		}
		if serr := e.setState(inst, vm.StateSetupFailed, err.Error()); serr != nil {
			return serr
		}
		return err
	}
	if len(ready.errors) > 0 {
		err := provisionError(inst.Name, ready.errors)
		if serr := e.setState(inst, vm.StateSetupFailed, err.Error()); serr != nil {
			return serr
		}
		return err
	}
	e.ready.forget(inst.ID)
	if err := e.setState(inst, vm.StateRunning, ""); err != nil {
		return err
	}
	e.jobs.Resume(inst.ID) // queued jobs run again
	return nil
}

// settleWatch records a wait for the guest on its operation and, once
// cloud-init is known to run, on the instance.
type settleWatch struct {
	op   *ops.Op
	e    *Engine
	inst *vm.Instance
}

func (w *settleWatch) Stage(step ops.Step, detail string) { w.op.Stage(step, detail) }
func (w *settleWatch) Progress(detail string)             { w.op.Progress(detail) }

func (w *settleWatch) CloudInit() {
	w.inst.Provisioning = &vm.Provisioning{Status: vm.ProvisioningRunning}
	if err := w.e.setState(w.inst, w.inst.State, w.inst.StateReason); err != nil {
		w.e.log.Warn("record provisioning", "instance", w.inst.Name, "error", err)
	}
}

// cancelled records a wait that a stop or delete cancelled: the instance
// rests SetupFailed (its domain still runs) so the stop or delete that
// cancelled it may act at once.
func (e *Engine) cancelled(inst *vm.Instance, cause error) error {
	e.ready.forget(inst.ID)
	if err := e.setState(inst, vm.StateSetupFailed, cause.Error()); err != nil {
		return err
	}
	return cause
}

// rollbackCreate undoes a create: domain, files and address. Each undo is
// idempotent, so it is safe after any partial create, and again at
// reconcile after a crash. The address leaves the record in the same
// transaction that frees it, so a CreateFailed record never shows an
// address another instance may now hold.
func (e *Engine) rollbackCreate(ctx context.Context, inst *vm.Instance) {
	if err := e.hv.Destroy(ctx, inst.Domain); err != nil {
		e.log.Warn("rollback: destroy domain", "instance", inst.Name, "error", err)
	}
	e.data.Detach(*inst)
	if err := e.removeInstanceFiles(inst.ID); err != nil {
		e.log.Warn("rollback: remove files", "instance", inst.Name, "error", err)
	}
	if err := e.store.Update(func(tx *store.Tx) error { return ReleaseAddress(tx, inst) }); err != nil {
		e.log.Warn("rollback: release address", "instance", inst.Name, "error", err)
		return
	}
	// A leftover lock is harmless (it names this port only) and goes at
	// the next full sync.
	if err := e.nets.RemoveInstancePort(ctx, *inst); err != nil {
		e.log.Warn("rollback: unlock port", "instance", inst.Name, "error", err)
	}
	inst.IP = netip.Addr{}
}

// deleteRecord drops the instance and its address from the store.
func (e *Engine) deleteRecord(inst vm.Instance) error {
	return e.store.Update(func(tx *store.Tx) error {
		if err := tx.ReleaseIPOf(inst.VNet, inst.IP, inst.ID); err != nil {
			return err
		}
		if err := tx.DeleteInstance(inst.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.DeleteJobs(inst.ID)
	})
}

func (e *Engine) runStart(ctx context.Context, op *ops.Op, inst vm.Instance) error {
	if _, err := os.Stat(e.paths.Disk(inst.ID)); err != nil {
		err = fmt.Errorf("disk of %s is missing (%v); the instance cannot start", inst.Name, err)
		return e.fail(&inst, vm.StateUnknown, err)
	}
	if err := e.bootDomain(ctx, op, inst); err != nil {
		return e.fail(&inst, vm.StateStopped, err)
	}
	return e.settle(ctx, op, &inst)
}

func (e *Engine) runStop(ctx context.Context, op *ops.Op, inst vm.Instance) error {
	if err := e.shutdownDomain(ctx, op, inst); err != nil {
		return e.fail(&inst, vm.StateUnknown, err)
	}
	return e.setState(&inst, vm.StateStopped, "")
}

func (e *Engine) runRestart(ctx context.Context, op *ops.Op, inst vm.Instance) error {
	if err := e.shutdownDomain(ctx, op, inst); err != nil {
		return e.fail(&inst, vm.StateUnknown, err)
	}
	if err := e.bootDomain(ctx, op, inst); err != nil {
		return e.fail(&inst, vm.StateStopped, err)
	}
	return e.settle(ctx, op, &inst)
}

func (e *Engine) runDelete(ctx context.Context, op *ops.Op, inst vm.Instance) error {
	op.Stage(StepDestroy, inst.Domain)
	if err := e.hv.Destroy(ctx, inst.Domain); err != nil {
		return e.fail(&inst, vm.StateUnknown, fmt.Errorf("destroy domain of %s: %w", inst.Name, err))
	}
	e.data.Detach(inst)
	op.Stage(StepRemove, e.paths.Dir(inst.ID))
	if err := e.removeInstanceFiles(inst.ID); err != nil {
		return e.fail(&inst, vm.StateUnknown, err)
	}
	op.Stage(StepRelease, addrOrNone(inst.IP))
	e.ready.forget(inst.ID)
	if err := e.deleteRecord(inst); err != nil {
		return err
	}
	// The instance is gone whatever happens here: a leftover lock is
	// harmless (it names this port only) and goes at the next full sync.
	if err := e.nets.RemoveInstancePort(context.WithoutCancel(ctx), inst); err != nil {
		e.log.Warn("delete: unlock port", "instance", inst.Name, "error", err)
	}
	return nil
}

// shutdownDomain deallocates: it asks the guest to power off, waits up to
// StopTimeout, then destroys the domain so no QEMU process stays either
// way. The disk is untouched; the dataset mounts go with the domain.
func (e *Engine) shutdownDomain(ctx context.Context, op *ops.Op, inst vm.Instance) error {
	err := e.powerOff(ctx, op, inst)
	if err == nil {
		e.data.Detach(inst)
	}
	return err
}

func (e *Engine) powerOff(ctx context.Context, op *ops.Op, inst vm.Instance) error {
	// Running jobs are cancelled; queued ones wait for the next start.
	e.jobs.Halt(ctx, inst, "cancelled: the instance was stopped")
	st, err := e.hv.DomainState(ctx, inst.Domain)
	if err != nil {
		return fmt.Errorf("state of %s: %w", inst.Name, err)
	}
	if st == vm.DomainAbsent {
		return nil
	}
	op.Stage(StepShutdown, fmt.Sprintf("ACPI power button, up to %s", e.cfg.StopTimeout))
	if err := e.hv.Shutdown(ctx, inst.Domain); err != nil {
		e.log.Warn("graceful shutdown refused; destroying", "instance", inst.Name, "error", err)
	} else {
		waitCtx, cancel := context.WithTimeout(ctx, e.cfg.StopTimeout)
		err = e.hv.WaitGone(waitCtx, inst.Domain)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e.log.Warn("guest did not power off in time; destroying", "instance", inst.Name, "timeout", e.cfg.StopTimeout)
	}
	op.Stage(StepDealloc, "destroying the domain")
	// Destroy must finish even if the caller's context just ended, or a
	// QEMU process would outlive a stop.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := e.hv.Destroy(dctx, inst.Domain); err != nil {
		return fmt.Errorf("destroy domain of %s: %w", inst.Name, err)
	}
	return nil
}

// addrOrNone names an address, or says there is none (a CreateFailed
// instance has given its address back).
func addrOrNone(ip netip.Addr) string {
	if !ip.IsValid() {
		return "none held"
	}
	return ip.String()
}
