package httpapi

import (
	"strings"
	"syscall"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

func apiSize(s vm.Size) api.Size {
	return api.Size{Name: s.Name, Family: s.Family, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB}
}

// apiState is an instance state as the API spells it: the model's own name,
// which has a constant in package api (states_test.go checks every one).
func apiState(s vm.State) api.InstanceState { return api.InstanceState(s.String()) }

func (s *Server) apiInstance(inst vm.Instance) api.Instance {
	out := api.Instance{
		ID:          inst.ID,
		Name:        inst.Name,
		State:       apiState(inst.State),
		StateReason: inst.StateReason,
		Size:        apiSize(inst.Size),
		Image:       inst.Image,
		ImageDigest: inst.ImageDigest,
		MAC:         inst.MAC,
		VNet:        inst.VNet,
		Subnet:      inst.Subnet,
		DiskVirtual: inst.DiskSize,
		SSH:         len(inst.SSHAuthorizedKeys) > 0,
		SSHHostKeys: inst.SSHHostKeys,
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
		Datasets:    inst.Datasets,
	}
	if inst.IP.IsValid() {
		out.IP = inst.IP.String()
	}
	if p := inst.Provisioning; p != nil {
		out.Provisioning = &api.Provisioning{Status: api.ProvisioningStatus(p.Status.String()), Errors: p.Errors}
	}
	out.JobsRunning, out.JobsQueued = s.Jobs.Counts(inst.ID)
	if holder, busy := s.Ops.Holder(inst.ID); busy {
		out.StateReason = strings.TrimSpace(out.StateReason + " (operation " + holder + ")")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(s.Lifecycle.Paths().Disk(inst.ID), &st); err == nil {
		out.DiskUsed = st.Blocks * 512
	}
	return out
}

// apiOperation is an operation as the API shows it.
func apiOperation(op store.Operation) api.Operation {
	out := api.Operation{
		ID: op.ID, Kind: api.OperationKind(op.Kind), Target: op.Target, Caller: op.Caller,
		Status: api.OperationStatus(op.Status), Stages: make([]api.Stage, 0, len(op.Stages)),
		CreatedAt: op.CreatedAt, DoneAt: op.DoneAt,
	}
	for _, st := range op.Stages {
		out.Stages = append(out.Stages, api.Stage{Step: st.Step, Name: st.Name, Detail: st.Detail, StartedAt: st.StartedAt, DoneAt: st.DoneAt})
	}
	if op.Error != nil {
		out.Error = errdefs.ToAPI(errdefs.Recorded(op.Error))
	}
	return out
}
