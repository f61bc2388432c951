package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

// Version is labvmd's version, set at build time.
var Version = "dev"

// instances reads every instance record.
// Instances reads every instance record.
func (e *Engine) Instances() ([]vm.Instance, error) {
	var list []vm.Instance
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		list, err = tx.Instances()
		return err
	})
	return list, err
}

// InstanceSnapshot is every instance ordered by name as of the latest
// commit, shared with other readers: read-only (store.InstanceSnapshot).
func (e *Engine) InstanceSnapshot() []*vm.Instance { return e.store.InstanceSnapshot() }

// InstanceByName reads one instance record.
func (e *Engine) InstanceByName(name string) (vm.Instance, error) {
	var inst vm.Instance
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		inst, err = tx.InstanceByName(name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return inst, errdefs.New(errdefs.ErrNotFound, "`labvm list` shows the instances", "instance %q not found", name)
	}
	return inst, err
}

// guestUser is the account made in the guest for SSH and `labvm cp`: the owner's own
// name, so `ssh` needs no -l. root gets a neutral name since cloud images
// disable root logins.
func guestUser(owner string, isRoot bool) string {
	if isRoot || !validUnixName(owner) {
		return "labvm"
	}
	return owner
}

func validUnixName(s string) bool {
	if s == "" || len(s) > 32 || !(s[0] >= 'a' && s[0] <= 'z' || s[0] == '_') {
		return false
	}
	for _, ch := range s {
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}

// Create validates everything it can before anything is made, so bad
// input changes nothing; then it reserves the name and an address in one
// transaction and hands the slow work to an operation. The caller has
// been authorized to create; assigning to another user needs an owner,
// which the API checked as well.
func (e *Engine) Create(c authz.Caller, req api.CreateInstanceRequest) (store.Operation, error) {
	response := store.Operation{}
	if err := vm.ValidateName(req.Name); err != nil {
		return response, err
	}
	var assignedUID *int
	if req.AssignTo != "" {
		uid, err := authz.LookupPrincipal(req.AssignTo, false)
		if err != nil {
			return response, fmt.Errorf("--assign-to: %w", err)
		}
		assignedUID = uid
	}
	size, err := e.sizes.Lookup(req.Size)
	if req.Size == "" {
		err = errdefs.Invalidf("--size is required; `labvm sizes` lists them")
	}
	if err != nil {
		return response, err
	}
	if req.Image == "" {
		return response, errdefs.Invalidf("--image is required; `labvm image list` lists the imported images")
	}
	diskSize := e.cfg.DefaultDiskSize
	if req.DiskSize != "" {
		if diskSize, err = storage.ParseSize(req.DiskSize); err != nil {
			return response, errdefs.New(errdefs.ErrInvalidArgument, "give a size like 120G, 200GiB or 1T", "--disk-size: %v", err)
		}
		if err := storage.CheckVirtualSize(e.paths.Instances(), diskSize); err != nil {
			return response, fmt.Errorf("--disk-size: %w", err)
		}
	}
	var keys []string
	if strings.TrimSpace(req.SSHPublicKey) != "" {
		key, err := storage.ParseAuthorizedKey([]byte(req.SSHPublicKey))
		if err != nil {
			return response, errdefs.New(errdefs.ErrInvalidArgument, "pass the public key file, e.g. --ssh-key ~/.ssh/id_ed25519.pub", "--ssh-key: %v", err)
		}
		keys = []string{key}
	}

	idle := e.cfg.Idle.Default
	if req.IdleShutdown != "" {
		if idle, err = e.parseIdle(req.IdleShutdown); err != nil {
			return response, fmt.Errorf("--idle-shutdown: %w", err)
		}
	}

	scripts, err := e.scriptsOf(req)
	if err != nil {
		return response, err
	}
	// The guest's SSH host key is made here, so the record names it from
	// the start; the private half goes only into the seed.
	hostKey, err := storage.NewSSHHostKey()
	if err != nil {
		return response, fmt.Errorf("make the SSH host key: %w", err)
	}
	if err := e.checkHost(size); err != nil {
		return response, err
	}

	now := time.Now().UTC()
	inst := vm.Instance{
		ID:                vm.NewID(),
		Name:              req.Name,
		Size:              size,
		Image:             req.Image,
		DiskSize:          diskSize,
		SSHAuthorizedKeys: keys,
		SSHHostKeys:       []string{hostKey.Public},
		Creator:           c.Name,
		CreatorUID:        &c.UID,
		AssignedTo:        req.AssignTo,
		AssignedUID:       assignedUID,
		NoAutostart:       req.NoAutostart,
		Scripts: vm.InstanceScripts{
			Setup: len(scripts.Setup) > 0, Startup: len(scripts.Startup) > 0,
			TimeoutSeconds: int(scripts.Timeout.Seconds()),
		},
		Policy:    vm.Policy{IdleShutdown: idle},
		Datasets:  req.Datasets,
		State:     vm.StateCreating,
		Accel:     e.cfg.Accel,
		Host:      e.cfg.Host,
		CreatedAt: now,
		UpdatedAt: now,
	}
	if inst.AssignedTo == c.Name {
		inst.AssignedTo, inst.AssignedUID = "", nil
	}
	// Every instance gets its user's account, keys or not: the image's
	// applications run as it (guest.InstanceEnvPath), and `labvm cp`
	// creates files as it in its home. Without a key nobody can log in
	// to it (its password is locked), so SSH stays closed.
	inst.GuestUser = guestUser(inst.Owner(), inst.Owner() == "root")
	inst.Domain = vm.DomainName(inst.Name, inst.ID)

	// In a cluster the name (and the cluster's quota) is taken there
	// first; whatever fails after gives it back.
	if err := e.reserveName(inst); err != nil {
		return response, err
	}
	reserved := true
	defer func() {
		if reserved {
			e.releaseName(inst.Name)
		}
	}()

	err = e.store.Update(func(tx *store.Tx) error {
		img, err := tx.Image(req.Image)
		if errors.Is(err, store.ErrNotFound) {
			return errdefs.New(errdefs.ErrInvalidArgument, "`labvm image list` shows the images; import one with `labvm image import NAME FILE`", "unknown image %q", req.Image)
		}
		if err != nil {
			return err
		}
		if inst.DiskSize < img.VirtualSize {
			return errdefs.Invalidf("--disk-size %s is below the image's size %s; give at least %s", storage.FormatSize(inst.DiskSize), storage.FormatSize(img.VirtualSize), storage.FormatSize(img.VirtualSize))
		}
		inst.ImageDigest = img.Digest
		if _, err := tx.InstanceByName(inst.Name); err == nil {
			return errdefs.New(errdefs.ErrAlreadyExists, "pick another name, or delete the existing instance first", "instance %q already exists", inst.Name)
		}
		if err := e.data.Check(tx, inst.Datasets); err != nil {
			return err
		}
		if err := e.checkQuota(tx, size); err != nil {
			return err
		}
		vnet, subnet, err := e.nets.Place(tx, req.VNet, req.Subnet)
		if err != nil {
			return err
		}
		inst.VNet, inst.Subnet, inst.Bridge = vnet.Name, subnet.Name, vnet.Bridge
		inst.Prefix, inst.Gateway = subnet.CIDR.Bits(), network.Gateway(subnet.CIDR)
		if vnet.Egress == network.EgressNAT.String() {
			inst.DNS = e.cfg.Nameservers
		}
		// Search from the last address given out: a create's cost does
		// not grow with the number of instances.
		for a := range network.GuestAddrs(subnet.CIDR, tx.IPHint(inst.VNet)) {
			if !tx.IPAllocated(inst.VNet, a) {
				inst.IP = a
				break
			}
		}
		if !inst.IP.IsValid() {
			return fmt.Errorf("%w: every guest address of %s/%s (%s) is in use", network.ErrSubnetFull, inst.VNet, inst.Subnet, subnet.CIDR)
		}
		if err := tx.SetIPHint(inst.VNet, inst.IP); err != nil {
			return err
		}
		// The MAC follows the address: unique on the host, so no two
		// guests on a bridge share one.
		inst.MAC = network.AddressMAC(inst.IP)
		if err := tx.AllocateIP(inst.VNet, inst.IP, inst.ID); err != nil {
			return err
		}
		return tx.CreateInstance(inst)
	})
	if err != nil {
		return response, err
	}
	op, err := e.ops.Begin(api.OpCreate, inst.Name, inst.ID, who(c))
	if err != nil {
		e.rollbackCreate(context.Background(), &inst)
		if derr := e.deleteRecord(inst); derr != nil {
			e.log.Error("drop the record of a create that could not begin", "instance", inst.Name, "error", derr)
		}
		return response, err
	}
	// The snapshot is taken before the operation runs: it may finish (and
	// leave the running set) before this function returns.
	snap := op.Snapshot()
	// The record holds the name now (a CreateFailed one too, until it is
	// deleted), so the reservation stays.
	reserved = false
	e.ops.Go(op, func(ctx context.Context, op *ops.Op) error {
		return e.runCreate(ctx, op, inst, seedSecrets{scripts: scripts, hostKey: hostKey})
	})
	return snap, nil
}

func who(c authz.Caller) ops.Who { return ops.Who{Name: c.Name, UID: c.UID} }

// Start boots a stopped instance and waits for its guest.
func (e *Engine) Start(c authz.Caller, inst vm.Instance) (store.Operation, error) {
	return e.act(c, inst, vm.ActionStart, api.OpStart, e.runStart)
}

// Stop shuts the guest down and deallocates the domain; the disk stays.
// A start or create still waiting for its guest is cancelled first.
func (e *Engine) Stop(c authz.Caller, inst vm.Instance) (store.Operation, error) {
	return e.act(c, inst, vm.ActionStop, api.OpStop, e.runStop)
}

// Restart is a stop and a start.
func (e *Engine) Restart(c authz.Caller, inst vm.Instance) (store.Operation, error) {
	return e.act(c, inst, vm.ActionRestart, api.OpRestart, e.runRestart)
}

// Delete removes the domain, the files and the record. A start or create
// still waiting for its guest is cancelled first.
func (e *Engine) Delete(c authz.Caller, inst vm.Instance) (store.Operation, error) {
	return e.act(c, inst, vm.ActionDelete, api.OpDelete, e.runDelete)
}

// act starts a lifecycle operation on an existing instance after checking
// that the state machine allows it.
func (e *Engine) act(c authz.Caller, inst vm.Instance, act vm.Action, kind api.OperationKind,
	run func(ctx context.Context, op *ops.Op, inst vm.Instance) error) (store.Operation, error) {
	if act == vm.ActionStop || act == vm.ActionDelete {
		e.cancelWait(inst, kind, c)
	}
	return e.actAs(who(c), inst, act, kind, actPrecondition{}, run)
}

// PolicyAction is a start or stop the daemon's own policies (idle
// shutdown, schedules) ask for.
type PolicyAction struct {
	// Who is the policy, e.g. "policy:idle".
	Who    ops.Who
	Action vm.Action
	// OnlyFrom, when set, are the states it may act from (the idle
	// shutdown stops Running instances only); otherwise the state
	// machine's.
	OnlyFrom []vm.State
	// Reason is kept as the state reason of an instance it stopped.
	Reason string
	// Unchanged, when set, acts only if the record re-read under the
	// operation's claim is the one the caller decided on (the same
	// UpdatedAt): the guest watcher's rule, so an instance a start or
	// restart changed meanwhile is never taken for a vanished guest.
	Unchanged bool
}

// ActFor runs a policy's start or stop as an ordinary operation. Unlike a
// user's stop it never cancels another operation: a busy instance is an
// ops.ErrBusy conflict, a state it cannot act from vm.ErrIllegalTransition.
func (e *Engine) ActFor(p PolicyAction, inst vm.Instance) (store.Operation, error) {
	pre := actPrecondition{onlyFrom: p.OnlyFrom}
	if p.Unchanged {
		pre.seen = &inst
	}
	switch p.Action {
	case vm.ActionStart:
		return e.actAs(p.Who, inst, p.Action, api.OpStart, pre, e.runStart)
	case vm.ActionStop:
		return e.actAs(p.Who, inst, p.Action, api.OpStop, pre, func(ctx context.Context, op *ops.Op, inst vm.Instance) error {
			return e.stopWithReason(ctx, op, inst, p.Reason)
		})
	}
	return store.Operation{}, fmt.Errorf("policy action %s: only start and stop", p.Action)
}

// actPrecondition is what a policy's action asks of the record re-read
// under its claim, beyond the state machine.
type actPrecondition struct {
	// onlyFrom, when set, are the states it may act from.
	onlyFrom []vm.State
	// seen, when set, is the record the caller decided on: the action
	// proceeds only if the record has not changed since.
	seen *vm.Instance
}

// ErrRecordChanged refuses a policy's action on a record that changed
// since the policy looked; its next look decides again.
var ErrRecordChanged = errors.New("the instance changed since it was looked at")

func (p actPrecondition) check(act vm.Action, cur vm.Instance) error {
	if len(p.onlyFrom) > 0 && !slices.Contains(p.onlyFrom, cur.State) {
		return fmt.Errorf("cannot %s: instance is %s: %w", act, cur.State, vm.ErrIllegalTransition)
	}
	if p.seen != nil && !cur.UpdatedAt.Equal(p.seen.UpdatedAt) {
		return fmt.Errorf("%w (was %s at %s, now %s at %s)", ErrRecordChanged,
			p.seen.State, p.seen.UpdatedAt.Format(time.RFC3339Nano), cur.State, cur.UpdatedAt.Format(time.RFC3339Nano))
	}
	return nil
}

func (e *Engine) actAs(w ops.Who, inst vm.Instance, act vm.Action, kind api.OperationKind, pre actPrecondition,
	run func(ctx context.Context, op *ops.Op, inst vm.Instance) error) (store.Operation, error) {
	if act == vm.ActionStart {
		if err := e.checkHost(inst.Size); err != nil {
			return store.Operation{}, fmt.Errorf("start %s: %w", inst.Name, err)
		}
	}
	op, err := e.ops.Begin(kind, inst.Name, inst.ID, w)
	if err != nil {
		return store.Operation{}, err
	}
	// Re-read under the claim: the state may have changed between the
	// lookup and the claim.
	if inst, err = e.InstanceByName(inst.Name); err == nil {
		err = inst.State.Check(act)
	}
	if err == nil {
		err = pre.check(act, inst)
	}
	if err != nil {
		op.Finish(err)
		return store.Operation{}, fmt.Errorf("%s: %w", inst.Name, err)
	}
	if err := e.setState(&inst, act.BusyState(), ""); err != nil {
		op.Finish(err)
		return store.Operation{}, err
	}
	snap := op.Snapshot()
	e.ops.Go(op, func(ctx context.Context, op *ops.Op) error { return run(ctx, op, inst) })
	return snap, nil
}

// cancelWait cancels a start or create that is only waiting for its guest
// (SettingUp), so stop and delete act at once instead of being refused as
// busy while a broken boot runs out its ready timeout.
func (e *Engine) cancelWait(inst vm.Instance, kind api.OperationKind, c authz.Caller) {
	cur, err := e.InstanceByName(inst.Name)
	if err != nil || cur.State != vm.StateSettingUp {
		return
	}
	cause := errdefs.New(errdefs.ErrCancelled, "", "cancelled by %s's %s of %s", c.Name, kind, inst.Name)
	id, err := e.ops.CancelHolder(context.Background(), inst.ID, cause, 30*time.Second)
	if id != "" {
		e.log.Info("cancelled an operation waiting for its guest", "instance", inst.Name, "op", id, "by", kind, "error", err)
	}
}

// maxExecOutput bounds what one exec returns to the client.
const maxExecOutput = 16 << 20

// MaxExecTimeout bounds `labvm exec --timeout`: longer work is a job.
const MaxExecTimeout = 24 * time.Hour

// Exec runs a command in the guest and returns its output.
func (e *Engine) Exec(ctx context.Context, inst vm.Instance, req api.ExecRequest) (api.ExecResult, error) {
	var response api.ExecResult
	if len(req.Command) == 0 || req.Command[0] == "" {
		return response, errdefs.Invalidf("no command given; use `labvm exec NAME -- COMMAND [ARGS…]`")
	}
	if req.TimeoutSeconds < 0 || time.Duration(req.TimeoutSeconds) > MaxExecTimeout/time.Second {
		return response, errdefs.New(errdefs.ErrInvalidArgument, "run longer work as a job: `labvm job submit NAME -- COMMAND`",
			"--timeout %ds: want 1s to %s", req.TimeoutSeconds, MaxExecTimeout)
	}
	if err := inst.State.Check(vm.ActionAccess); err != nil {
		return response, fmt.Errorf("exec in %s: %w", inst.Name, err)
	}
	timeout := e.cfg.ExecTimeout
	if req.TimeoutSeconds > 0 {
		timeout = time.Duration(req.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := e.hv.Exec(ctx, inst.Domain, vm.ExecRequest{Path: req.Command[0], Args: req.Command[1:], Input: req.Stdin})
	if err != nil {
		if errors.Is(err, vm.ErrExecTimeout) || errors.Is(err, context.DeadlineExceeded) {
			return response, errdefs.New(errdefs.ErrUnavailable, "raise --timeout, or run long commands as jobs", "exec in %s: no result after %s", inst.Name, timeout)
		}
		return response, fmt.Errorf("exec in %s: %w", inst.Name, err)
	}
	out := api.ExecResult{ExitCode: res.ExitCode, Signal: res.Signal, Stdout: res.Stdout, Stderr: res.Stderr, Truncated: res.Truncated}
	if len(out.Stdout) > maxExecOutput {
		out.Stdout, out.Truncated = out.Stdout[:maxExecOutput], true
	}
	if len(out.Stderr) > maxExecOutput {
		out.Stderr, out.Truncated = out.Stderr[:maxExecOutput], true
	}
	return out, nil
}

// setState persists a state change of inst. The operation owns the
// record it writes; the policy is the user's and may have changed since
// inst was read, so inst takes the stored one, which the manifest must
// keep for `labvm doctor --rebuild`.
func (e *Engine) setState(inst *vm.Instance, s vm.State, reason string) error {
	inst.SetState(s, reason, time.Now().UTC())
	snapshot := *inst
	var policy vm.Policy
	if err := e.store.Update(func(tx *store.Tx) error {
		if err := tx.PutInstance(snapshot); err != nil {
			return err
		}
		var err error
		policy, err = tx.Policy(snapshot.ID)
		return err
	}); err != nil {
		return err
	}
	inst.Policy = policy
	e.KeepManifest(*inst)
	return nil
}

// removeInstanceFiles deletes an instance's directory: disk, seed, logs.
func (e *Engine) removeInstanceFiles(id string) error {
	dir := e.paths.Dir(id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

func netipPrefix(inst vm.Instance) netip.Prefix { return netip.PrefixFrom(inst.IP, inst.Prefix) }

// fail records the state an operation that failed with cause leaves the
// instance in, and returns cause. If the state cannot be written either,
// both errors are returned and logged: an instance must never be left in
// a transitional state without anyone hearing of it (reconcile settles it
// at the next start).
func (e *Engine) fail(inst *vm.Instance, s vm.State, cause error) error {
	if err := e.setState(inst, s, cause.Error()); err != nil {
		e.log.Error("record the state after a failure", "instance", inst.Name, "state", s, "cause", cause, "error", err)
		return errors.Join(cause, fmt.Errorf("record %s as %s: %w", inst.Name, s, err))
	}
	return cause
}
