package lifecycle

import (
	"errors"
	"fmt"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// IdleConfig is the host's idle shutdown setting: the bounds it accepts
// and the value of instances created without one.
type IdleConfig struct {
	Bounds vm.IdleBounds
	// Default applies to creates that name none; zero is off.
	Default time.Duration
}

const idleHint = "give a duration such as 30m, 2h or 1d, or off"

// parseIdle reads a create's or a change's idle shutdown within the
// host's bounds.
func (e *Engine) parseIdle(s string) (time.Duration, error) {
	d, err := vm.ParseIdleShutdown(s, e.idleBounds())
	if err != nil {
		return 0, errdefs.New(errdefs.ErrInvalidArgument, idleHint, "%v", err)
	}
	return d, nil
}

func (e *Engine) idleBounds() vm.IdleBounds {
	b := e.cfg.Idle.Bounds
	if b.Min <= 0 || b.Max <= 0 {
		return vm.DefaultIdleBounds()
	}
	return b
}

// IdleBounds are the idle shutdown values this host accepts.
func (e *Engine) IdleBounds() vm.IdleBounds { return e.idleBounds() }

// SetIdleShutdown sets or clears (off) an instance's idle shutdown. It
// changes only the instance's policy, which the store keeps apart from
// the record an operation writes, so it may be set while an operation
// runs, and takes effect at the idle policy's next look.
func (e *Engine) SetIdleShutdown(inst vm.Instance, value string) (vm.Instance, error) {
	if value == "" {
		return inst, errdefs.New(errdefs.ErrInvalidArgument, idleHint, "idle shutdown: no value given")
	}
	d, err := e.parseIdle(value)
	if err != nil {
		return inst, err
	}
	var saved vm.Instance
	err = e.store.Update(func(tx *store.Tx) error {
		p := inst.Policy
		p.IdleShutdown = d
		var err error
		saved, err = tx.SetPolicy(inst.ID, p)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return inst, errdefs.New(errdefs.ErrNotFound, "`labvm list` shows the instances", "instance %q not found", inst.Name)
	}
	if err != nil {
		return inst, fmt.Errorf("set the idle shutdown of %s: %w", inst.Name, err)
	}
	e.KeepManifest(saved)
	return saved, nil
}
