package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

func (d *Daemon) getInfo(r *http.Request, c Caller) (response, error) {
	var n int
	err := d.store.View(func(tx *store.Tx) error {
		list, err := tx.Instances()
		n = len(list)
		return err
	})
	return ok(api.Info{
		Version:     Version,
		Host:        d.cfg.Host,
		Accelerator: d.accel.String(),
		AccelReason: d.accelWhy,
		DataDir:     d.cfg.DataDir,
		LibvirtURI:  d.cfg.LibvirtURI,
		Caller:      c.Name,
		CallerUID:   c.UID,
		Instances:   n,
		DefaultVNet: d.cfg.VNet.Name,
	}), err
}

// Version is labvmd's version, set at build time.
var Version = "dev"

func (d *Daemon) listSizes(r *http.Request, c Caller) (response, error) {
	var out []api.Size
	for _, s := range d.sizes.List() {
		out = append(out, apiSize(s))
	}
	return ok(out), nil
}

func apiSize(s vm.Size) api.Size {
	return api.Size{Name: s.Name, Family: s.Family, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB}
}

// instances reads every instance record.
func (d *Daemon) instances() ([]vm.Instance, error) {
	var list []vm.Instance
	err := d.store.View(func(tx *store.Tx) error {
		var err error
		list, err = tx.Instances()
		return err
	})
	return list, err
}

func (d *Daemon) instanceByName(name string) (vm.Instance, error) {
	var inst vm.Instance
	err := d.store.View(func(tx *store.Tx) error {
		var err error
		inst, err = tx.InstanceByName(name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return inst, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("instance %q not found", name), Hint: "`labvm list` shows the instances"}
	}
	return inst, err
}

func (d *Daemon) apiInstance(inst vm.Instance) api.Instance {
	out := api.Instance{
		ID:          inst.ID,
		Name:        inst.Name,
		State:       inst.State.String(),
		StateReason: inst.StateReason,
		Size:        apiSize(inst.Size),
		Image:       inst.Image,
		ImageDigest: inst.ImageDigest,
		MAC:         inst.MAC,
		VNet:        inst.VNet,
		Subnet:      inst.Subnet,
		DiskVirtual: inst.DiskSize,
		SSH:         len(inst.SSHAuthorizedKeys) > 0,
		GuestUser:   inst.GuestUser,
		Creator:     inst.Creator,
		AssignedTo:  inst.AssignedTo,
		Owner:       inst.Owner(),
		Domain:      inst.Domain,
		Accel:       inst.Accel.String(),
		SetupScript: inst.Scripts.Setup,
		SetupExit:   inst.Scripts.SetupExit,
		Startup:     inst.Scripts.Startup,
		Autostart:   !inst.NoAutostart,
		Host:        inst.Host,
		CreatedAt:   inst.CreatedAt,
		UpdatedAt:   inst.UpdatedAt,
	}
	if inst.IP.IsValid() {
		out.IP = inst.IP.String()
	}
	out.JobsRunning, out.JobsQueued = d.jobs.counts(inst.ID)
	if holder, busy := d.ops.holder(inst.ID); busy {
		out.StateReason = strings.TrimSpace(out.StateReason + " (operation " + holder + ")")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(d.diskPath(inst.ID), &st); err == nil {
		out.DiskUsed = st.Blocks * 512
	}
	return out
}

func (d *Daemon) listInstances(r *http.Request, c Caller) (response, error) {
	list, err := d.instances()
	if err != nil {
		return response{}, err
	}
	// Readers see every instance; anyone else sees only their own, and
	// is refused when they have none (they have no business here).
	seeAll := d.authorize(c, PermRead) == nil
	owner := r.URL.Query().Get("owner")
	if r.URL.Query().Has("mine") {
		owner = c.Name
	}
	out := make([]api.Instance, 0, len(list))
	owns := false
	for _, inst := range list {
		mine := inst.Owner() == c.Name || inst.Creator == c.Name
		owns = owns || mine
		if !seeAll && !mine {
			continue
		}
		if owner != "" && inst.Owner() != owner && inst.Creator != owner {
			continue
		}
		out = append(out, d.apiInstance(inst))
	}
	if !seeAll && !owns {
		return response{}, d.authorize(c, PermRead)
	}
	return ok(out), nil
}

func (d *Daemon) getInstance(r *http.Request, c Caller) (response, error) {
	inst, err := d.instanceByName(r.PathValue("name"))
	if err != nil {
		return response{}, err
	}
	if err := d.authorizeInstance(c, PermRead, inst); err != nil {
		return response{}, err
	}
	out := d.apiInstance(inst)
	apps := defaultApps
	d.store.View(func(tx *store.Tx) error {
		if img, err := tx.Image(inst.Image); err == nil {
			apps = appsOf(img)
		}
		return nil
	})
	out.Apps = apiApps(apps)
	return ok(out), nil
}

func (d *Daemon) diskPath(id string) string {
	return filepath.Join(d.cfg.instanceDir(id), "disk.qcow2")
}
func (d *Daemon) seedPath(id string) string { return filepath.Join(d.cfg.instanceDir(id), "seed.iso") }
func (d *Daemon) consoleLog(id string) string {
	return filepath.Join(d.cfg.instanceDir(id), "console.log")
}

// guestUser is the account made in the guest for SSH: the owner's own
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

// createInstance validates everything it can before anything is made, so
// bad input changes nothing; then it reserves the name and an address in
// one transaction and hands the slow work to an operation.
func (d *Daemon) createInstance(r *http.Request, c Caller) (response, error) {
	var req api.CreateInstanceRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	noteTarget(r, req.Name)
	if err := d.authorize(c, PermWrite); err != nil {
		return response{}, err
	}
	if err := vm.ValidateName(req.Name); err != nil {
		return response{}, err
	}
	if req.AssignTo != "" {
		if role, err := d.roleOf(c); err != nil || role < RoleOwner {
			return response{}, &api.Error{Code: api.CodePermissionDenied,
				Message: fmt.Sprintf("%s (role %s) may not create on behalf of others: --assign-to needs the owner role", c.Name, role),
				Hint:    "ask an owner to create it for " + req.AssignTo}
		}
		if err := lookupPrincipal(req.AssignTo, false); err != nil {
			return response{}, fmt.Errorf("--assign-to: %w", err)
		}
	}
	size, err := d.sizes.Lookup(req.Size)
	if req.Size == "" {
		err = invalidf("--size is required; `labvm sizes` lists them")
	}
	if err != nil {
		return response{}, err
	}
	if req.Image == "" {
		return response{}, invalidf("--image is required; `labvm image list` lists the imported images")
	}
	diskSize := d.cfg.DefaultDiskSize
	if req.DiskSize != "" {
		if diskSize, err = storage.ParseSize(req.DiskSize); err != nil {
			return response{}, &api.Error{Code: api.CodeInvalidArgument, Message: "--disk-size: " + err.Error(), Hint: "give a size like 120G, 200GiB or 1T"}
		}
	}
	var keys []string
	if strings.TrimSpace(req.SSHPublicKey) != "" {
		key, err := storage.ParseAuthorizedKey([]byte(req.SSHPublicKey))
		if err != nil {
			return response{}, &api.Error{Code: api.CodeInvalidArgument, Message: "--ssh-key: " + err.Error(), Hint: "pass the public key file, e.g. --ssh-key ~/.ssh/id_ed25519.pub"}
		}
		keys = []string{key}
	}

	scripts, err := d.scriptsOf(req)
	if err != nil {
		return response{}, err
	}
	if err := d.checkHost(size); err != nil {
		return response{}, err
	}

	now := time.Now().UTC()
	inst := vm.Instance{
		ID:                vm.NewID(),
		Name:              req.Name,
		Size:              size,
		Image:             req.Image,
		DiskSize:          diskSize,
		SSHAuthorizedKeys: keys,
		Creator:           c.Name,
		AssignedTo:        req.AssignTo,
		NoAutostart:       req.NoAutostart,
		Scripts: vm.InstanceScripts{
			Setup: len(scripts.Setup) > 0, Startup: len(scripts.Startup) > 0,
			TimeoutSeconds: int(scripts.Timeout.Seconds()),
		},
		State:     vm.StateCreating,
		Accel:     d.accel,
		Host:      d.cfg.Host,
		CreatedAt: now,
		UpdatedAt: now,
	}
	if inst.AssignedTo == c.Name {
		inst.AssignedTo = ""
	}
	if len(keys) > 0 {
		inst.GuestUser = guestUser(inst.Owner(), inst.Owner() == "root")
	}
	inst.Domain = vm.DomainName(inst.Name, inst.ID)
	inst.MAC = network.MAC(inst.ID)

	err = d.store.Update(func(tx *store.Tx) error {
		img, err := tx.Image(req.Image)
		if errors.Is(err, store.ErrNotFound) {
			return &api.Error{Code: api.CodeInvalidArgument, Message: fmt.Sprintf("unknown image %q", req.Image), Hint: "`labvm image list` shows the images; import one with `labvm image import NAME FILE`"}
		}
		if err != nil {
			return err
		}
		if inst.DiskSize < img.VirtualSize {
			return invalidf("--disk-size %s is below the image's size %s; give at least %s", storage.FormatSize(inst.DiskSize), storage.FormatSize(img.VirtualSize), storage.FormatSize(img.VirtualSize))
		}
		inst.ImageDigest = img.Digest
		if _, err := tx.InstanceByName(inst.Name); err == nil {
			return &api.Error{Code: api.CodeAlreadyExists, Message: fmt.Sprintf("instance %q already exists", inst.Name), Hint: "pick another name, or delete the existing instance first"}
		}
		if err := d.checkQuota(tx, size); err != nil {
			return err
		}
		vnet, subnet, err := d.placement(tx, req.VNet, req.Subnet)
		if err != nil {
			return err
		}
		inst.VNet, inst.Subnet, inst.Bridge = vnet.Name, subnet.Name, vnet.Bridge
		inst.Prefix, inst.Gateway = subnet.CIDR.Bits(), network.Gateway(subnet.CIDR)
		if vnet.Egress == network.EgressNAT.String() {
			inst.DNS = d.cfg.Nameservers
		}
		allocs, err := tx.IPAllocations(inst.VNet)
		if err != nil {
			return err
		}
		used := make([]netip.Addr, 0, len(allocs))
		for _, a := range allocs {
			used = append(used, a.IP)
		}
		if inst.IP, err = network.NextFree(subnet.CIDR, used); err != nil {
			return err
		}
		if err := tx.AllocateIP(inst.VNet, inst.IP, inst.ID); err != nil {
			return err
		}
		return tx.CreateInstance(inst)
	})
	if err != nil {
		return response{}, err
	}
	op, err := d.ops.begin(api.OpCreate, inst.Name, inst.ID, c)
	if err != nil {
		d.rollbackCreate(context.Background(), &inst)
		d.deleteRecord(inst)
		return response{}, err
	}
	d.goOp(op, func(ctx context.Context, op *Op) error { return d.runCreate(ctx, op, inst, scripts) })
	return accepted(op.Snapshot()), nil
}

// beginAction starts a lifecycle operation on an existing instance after
// checking that the state machine allows it.
func (d *Daemon) beginAction(r *http.Request, c Caller, act vm.Action, perm Permission, kind api.OperationKind,
	run func(ctx context.Context, op *Op, inst vm.Instance) error) (response, error) {
	inst, err := d.instanceByName(r.PathValue("name"))
	if err != nil {
		return response{}, err
	}
	if err := d.authorizeInstance(c, perm, inst); err != nil {
		return response{}, err
	}
	if act == vm.ActionStart {
		if err := d.checkHost(inst.Size); err != nil {
			return response{}, fmt.Errorf("start %s: %w", inst.Name, err)
		}
	}
	op, err := d.ops.begin(kind, inst.Name, inst.ID, c)
	if err != nil {
		return response{}, err
	}
	// Re-read under the claim: the state may have changed between the
	// lookup and the claim.
	if inst, err = d.instanceByName(inst.Name); err == nil {
		err = inst.State.Check(act)
	}
	if err != nil {
		op.Finish(err)
		return response{}, fmt.Errorf("%s: %w", inst.Name, err)
	}
	if err := d.setState(&inst, act.BusyState(), ""); err != nil {
		op.Finish(err)
		return response{}, err
	}
	d.goOp(op, func(ctx context.Context, op *Op) error { return run(ctx, op, inst) })
	return accepted(op.Snapshot()), nil
}

func (d *Daemon) startInstance(r *http.Request, c Caller) (response, error) {
	return d.beginAction(r, c, vm.ActionStart, PermStart, api.OpStart, d.runStart)
}

func (d *Daemon) stopInstance(r *http.Request, c Caller) (response, error) {
	return d.beginAction(r, c, vm.ActionStop, PermStop, api.OpStop, d.runStop)
}

func (d *Daemon) restartInstance(r *http.Request, c Caller) (response, error) {
	return d.beginAction(r, c, vm.ActionRestart, PermRestart, api.OpRestart, d.runRestart)
}

func (d *Daemon) deleteInstance(r *http.Request, c Caller) (response, error) {
	return d.beginAction(r, c, vm.ActionDelete, PermDelete, api.OpDelete, d.runDelete)
}

// maxExecOutput bounds what one exec returns to the client.
const maxExecOutput = 16 << 20

func (d *Daemon) execInstance(r *http.Request, c Caller) (response, error) {
	var req api.ExecRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	if len(req.Command) == 0 || req.Command[0] == "" {
		return response{}, invalidf("no command given; use `labvm exec NAME -- COMMAND [ARGS…]`")
	}
	inst, err := d.instanceByName(r.PathValue("name"))
	if err != nil {
		return response{}, err
	}
	if err := d.authorizeInstance(c, PermAppAccess, inst); err != nil {
		return response{}, err
	}
	if err := inst.State.Check(vm.ActionAccess); err != nil {
		return response{}, fmt.Errorf("exec in %s: %w", inst.Name, err)
	}
	timeout := d.cfg.ExecTimeout
	if req.TimeoutSeconds > 0 {
		timeout = time.Duration(req.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res, err := d.hv.Exec(ctx, inst.Domain, vm.ExecRequest{Path: req.Command[0], Args: req.Command[1:], Input: req.Stdin})
	if err != nil {
		if errors.Is(err, vm.ErrExecTimeout) || errors.Is(err, context.DeadlineExceeded) {
			return response{}, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("exec in %s: no result after %s", inst.Name, timeout), Hint: "raise --timeout, or run long commands as jobs"}
		}
		return response{}, fmt.Errorf("exec in %s: %w", inst.Name, err)
	}
	out := api.ExecResult{ExitCode: res.ExitCode, Signal: res.Signal, Stdout: res.Stdout, Stderr: res.Stderr, Truncated: res.Truncated}
	if len(out.Stdout) > maxExecOutput {
		out.Stdout, out.Truncated = out.Stdout[:maxExecOutput], true
	}
	if len(out.Stderr) > maxExecOutput {
		out.Stderr, out.Truncated = out.Stderr[:maxExecOutput], true
	}
	return ok(out), nil
}

// setState persists a state change of inst.
func (d *Daemon) setState(inst *vm.Instance, s vm.State, reason string) error {
	inst.SetState(s, reason, time.Now().UTC())
	snapshot := *inst
	if err := d.store.Update(func(tx *store.Tx) error { return tx.PutInstance(snapshot) }); err != nil {
		return err
	}
	d.keepManifest(snapshot)
	return nil
}

// removeInstanceFiles deletes an instance's directory: disk, seed, logs.
func (d *Daemon) removeInstanceFiles(id string) error {
	dir := d.cfg.instanceDir(id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

func netipPrefix(inst vm.Instance) netip.Prefix { return netip.PrefixFrom(inst.IP, inst.Prefix) }
