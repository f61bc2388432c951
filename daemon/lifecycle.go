package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

// runCreate makes the disk and seed, boots the domain and waits for the
// guest. Until the domain runs, any failure rolls back everything made so
// far and leaves the record as CreateFailed with the reason; a guest that
// boots but never becomes ready is SetupFailed and keeps its disk for
// inspection.
func (d *Daemon) runCreate(ctx context.Context, op *Op, inst vm.Instance, scripts storage.Scripts) error {
	if err := d.provision(ctx, op, inst, scripts); err != nil {
		// The rollback must run even when ctx was cancelled mid-step.
		d.rollbackCreate(context.WithoutCancel(ctx), &inst)
		if serr := d.setState(&inst, vm.StateCreateFailed, err.Error()); serr != nil {
			d.log.Error("record CreateFailed", "instance", inst.Name, "error", serr)
		}
		return err
	}
	return d.settle(ctx, op, &inst)
}

func (d *Daemon) provision(ctx context.Context, op *Op, inst vm.Instance, scripts storage.Scripts) error {
	var img store.Image
	err := d.store.View(func(tx *store.Tx) error {
		var err error
		img, err = tx.Image(inst.Image)
		return err
	})
	if err != nil {
		return fmt.Errorf("image %s: %w", inst.Image, err)
	}
	if err := storage.EnsurePrivateDir(d.cfg.instanceDir(inst.ID)); err != nil {
		return fmt.Errorf("create instance dir: %w", err)
	}
	// Before the disk: no disk is ever without the record that explains it.
	if err := d.writeManifest(inst); err != nil {
		return err
	}

	op.Stage("Creating disk", fmt.Sprintf("%s qcow2 overlay on %s", storage.FormatSize(inst.DiskSize), inst.Image))
	if err := storage.CreateOverlay(ctx, storage.OverlayOptions{
		Path: d.diskPath(inst.ID), BackingFile: img.Path, BackingFormat: "qcow2", Size: inst.DiskSize,
	}); err != nil {
		return fmt.Errorf("create disk for %s: %w", inst.Name, err)
	}

	op.Stage("Writing cloud-init seed", "NoCloud cidata: meta-data, user-data, network-config v2")
	spec := d.seedSpec(inst)
	spec.Scripts = scripts
	if err := storage.WriteSeed(ctx, d.seedPath(inst.ID), spec); err != nil {
		return fmt.Errorf("write seed for %s: %w", inst.Name, err)
	}
	return d.bootDomain(ctx, op, inst)
}

func (d *Daemon) seedSpec(inst vm.Instance) storage.SeedSpec {
	return storage.SeedSpec{
		InstanceID:        inst.ID,
		Hostname:          inst.Name,
		User:              inst.GuestUser,
		SSHAuthorizedKeys: inst.SSHAuthorizedKeys,
		MAC:               inst.MAC,
		Address:           netipPrefix(inst),
		Gateway:           inst.Gateway,
		DNS:               inst.DNS,
		PhoneHomeURL:      d.phoneHomeURL(inst),
	}
}

// bootDomain starts the instance's transient domain.
func (d *Daemon) bootDomain(ctx context.Context, op *Op, inst vm.Instance) error {
	op.Stage("Starting domain", fmt.Sprintf("%s, %d vCPU, %d MiB, %s", inst.Domain, inst.Size.VCPUs, inst.Size.MemoryMiB, inst.Accel))
	xml, err := vm.DomainXML(vm.DomainSpec{
		Name:       inst.Domain,
		InstanceID: inst.ID,
		VCPUs:      inst.Size.VCPUs,
		MemoryMiB:  inst.Size.MemoryMiB,
		DiskPath:   d.diskPath(inst.ID),
		SeedPath:   d.seedPath(inst.ID),
		Bridge:     inst.Bridge,
		MAC:        inst.MAC,
		ConsoleLog: d.consoleLog(inst.ID),
		Accel:      inst.Accel,
	})
	if err != nil {
		return fmt.Errorf("domain XML for %s: %w", inst.Name, err)
	}
	if err := d.hv.StartDomain(ctx, xml); err != nil {
		return fmt.Errorf("start domain for %s: %w", inst.Name, err)
	}
	return nil
}

// settle waits for a booted guest and records Running or SetupFailed.
func (d *Daemon) settle(ctx context.Context, op *Op, inst *vm.Instance) error {
	phoned := d.ready.arm(inst.ID)
	if err := d.setState(inst, vm.StateSettingUp, ""); err != nil {
		return err
	}
	op.Stage("Waiting for the guest", fmt.Sprintf("QEMU guest agent or cloud-init phone-home, up to %s", d.cfg.ReadyTimeout))
	if err := d.waitReady(ctx, *inst, phoned); err != nil {
		if ctx.Err() != nil || errors.Is(err, errInterrupted) {
			// The daemon is stopping: reconcile resumes the wait.
			return fmt.Errorf("interrupted while waiting for %s: %w", inst.Name, err)
		}
		if serr := d.setState(inst, vm.StateSetupFailed, err.Error()); serr != nil {
			return serr
		}
		return err
	}
	if err := d.awaitScripts(ctx, op, inst, phoned); err != nil {
		if ctx.Err() != nil || errors.Is(err, errInterrupted) {
			return fmt.Errorf("interrupted while waiting for %s's scripts: %w", inst.Name, err)
		}
		if serr := d.setState(inst, vm.StateSetupFailed, err.Error()); serr != nil {
			return serr
		}
		return err
	}
	d.ready.forget(inst.ID)
	if err := d.setState(inst, vm.StateRunning, ""); err != nil {
		return err
	}
	d.resumeJobs(inst.ID) // queued jobs run again
	return nil
}

// rollbackCreate undoes a create: domain, files and address. Each undo is
// idempotent, so it is safe after any partial create, and again at
// reconcile after a crash. The address leaves the record in the same
// transaction that frees it, so a CreateFailed record never shows an
// address another instance may now hold.
func (d *Daemon) rollbackCreate(ctx context.Context, inst *vm.Instance) {
	if err := d.hv.Destroy(ctx, inst.Domain); err != nil {
		d.log.Warn("rollback: destroy domain", "instance", inst.Name, "error", err)
	}
	if err := d.removeInstanceFiles(inst.ID); err != nil {
		d.log.Warn("rollback: remove files", "instance", inst.Name, "error", err)
	}
	if err := d.store.Update(func(tx *store.Tx) error { return releaseAddress(tx, inst) }); err != nil {
		d.log.Warn("rollback: release address", "instance", inst.Name, "error", err)
		return
	}
	inst.IP = netip.Addr{}
}

// deleteRecord drops the instance and its address from the store.
func (d *Daemon) deleteRecord(inst vm.Instance) error {
	return d.store.Update(func(tx *store.Tx) error {
		if err := tx.ReleaseIPOf(inst.VNet, inst.IP, inst.ID); err != nil {
			return err
		}
		if err := tx.DeleteInstance(inst.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.DeleteJobs(inst.ID)
	})
}

func (d *Daemon) runStart(ctx context.Context, op *Op, inst vm.Instance) error {
	if _, err := os.Stat(d.diskPath(inst.ID)); err != nil {
		err = fmt.Errorf("disk of %s is missing (%v); the instance cannot start", inst.Name, err)
		d.setState(&inst, vm.StateUnknown, err.Error())
		return err
	}
	if err := d.bootDomain(ctx, op, inst); err != nil {
		d.setState(&inst, vm.StateStopped, err.Error())
		return err
	}
	return d.settle(ctx, op, &inst)
}

func (d *Daemon) runStop(ctx context.Context, op *Op, inst vm.Instance) error {
	if err := d.shutdownDomain(ctx, op, inst); err != nil {
		d.setState(&inst, vm.StateUnknown, err.Error())
		return err
	}
	return d.setState(&inst, vm.StateStopped, "")
}

func (d *Daemon) runRestart(ctx context.Context, op *Op, inst vm.Instance) error {
	if err := d.shutdownDomain(ctx, op, inst); err != nil {
		d.setState(&inst, vm.StateUnknown, err.Error())
		return err
	}
	if err := d.bootDomain(ctx, op, inst); err != nil {
		d.setState(&inst, vm.StateStopped, err.Error())
		return err
	}
	return d.settle(ctx, op, &inst)
}

func (d *Daemon) runDelete(ctx context.Context, op *Op, inst vm.Instance) error {
	op.Stage("Destroying domain", inst.Domain)
	if err := d.hv.Destroy(ctx, inst.Domain); err != nil {
		d.setState(&inst, vm.StateUnknown, err.Error())
		return fmt.Errorf("destroy domain of %s: %w", inst.Name, err)
	}
	op.Stage("Removing disk and seed", d.cfg.instanceDir(inst.ID))
	if err := d.removeInstanceFiles(inst.ID); err != nil {
		d.setState(&inst, vm.StateUnknown, err.Error())
		return err
	}
	op.Stage("Releasing address", inst.IP.String())
	d.ready.forget(inst.ID)
	return d.deleteRecord(inst)
}

// shutdownDomain deallocates: it asks the guest to power off, waits up to
// StopTimeout, then destroys the domain so no QEMU process stays either
// way. The disk is untouched.
func (d *Daemon) shutdownDomain(ctx context.Context, op *Op, inst vm.Instance) error {
	// Running jobs are cancelled; queued ones wait for the next start.
	d.haltJobs(ctx, inst, "cancelled: the instance was stopped")
	st, err := d.hv.DomainState(ctx, inst.Domain)
	if err != nil {
		return fmt.Errorf("state of %s: %w", inst.Name, err)
	}
	if st == vm.DomainAbsent {
		return nil
	}
	op.Stage("Shutting down the guest", fmt.Sprintf("ACPI power button, up to %s", d.cfg.StopTimeout))
	if err := d.hv.Shutdown(ctx, inst.Domain); err != nil {
		d.log.Warn("graceful shutdown refused; destroying", "instance", inst.Name, "error", err)
	} else {
		waitCtx, cancel := context.WithTimeout(ctx, d.cfg.StopTimeout)
		err = d.hv.WaitGone(waitCtx, inst.Domain)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.log.Warn("guest did not power off in time; destroying", "instance", inst.Name, "timeout", d.cfg.StopTimeout)
	}
	op.Stage("Deallocating", "destroying the domain")
	// Destroy must finish even if the caller's context just ended, or a
	// QEMU process would outlive a stop.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := d.hv.Destroy(dctx, inst.Domain); err != nil {
		return fmt.Errorf("destroy domain of %s: %w", inst.Name, err)
	}
	return nil
}
