package httpapi

import (
	"fmt"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/library"
	"github.com/labvm/labvm/daemon/store"
)

func (s *Server) getInfo(c call) (response, error) {
	var membership *api.ClusterMembership
	if s.Cluster != nil {
		m := s.Cluster.Membership()
		membership = &m
	}
	return ok(api.Info{
		Cluster:     membership,
		Version:     s.Info.Version,
		Host:        s.Info.Host,
		Accelerator: s.Info.Accelerator,
		AccelReason: s.Info.AccelReason,
		DataDir:     s.Info.DataDir,
		LibvirtURI:  s.Info.LibvirtURI,
		Caller:      c.c.Name,
		CallerUID:   c.c.UID,
		Instances:   len(s.Lifecycle.InstanceSnapshot()),
		DefaultVNet: s.Info.DefaultVNet,
	}), nil
}

func (s *Server) listSizes(c call) (response, error) {
	var out []api.Size
	for _, sz := range s.Lifecycle.Sizes().List() {
		out = append(out, apiSize(sz))
	}
	return ok(out), nil
}

func (s *Server) getInstance(c call) (response, error) {
	out := s.apiInstance(c.inst)
	apps := library.DefaultApps
	if img, err := s.Library.Record(c.inst.Image); err == nil {
		apps = library.AppsOf(img)
	}
	out.Apps = library.WireApps(apps)
	var err error
	out.Schedules, err = s.instanceSchedules(c.inst)
	return ok(out), err
}

func (s *Server) createInstance(c call) (response, error) {
	var req api.CreateInstanceRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	c.target(req.Name)
	if req.AssignTo != "" {
		if role, err := s.Authz.RoleOf(c.c); err != nil || role < authz.RoleOwner {
			return response{}, errdefs.New(errdefs.ErrPermissionDenied, "ask an owner to create it for "+req.AssignTo,
				"%s (role %s) may not create on behalf of others: --assign-to needs the owner role", c.c.Name, role)
		}
	}
	op, err := s.Lifecycle.Create(c.c, req)
	return accepted(apiOperation(op)), err
}

// updateInstance exists to refuse: an instance's size is fixed for life.
func (s *Server) updateInstance(c call) (response, error) {
	var req api.UpdateInstanceRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	if req.Size != "" && req.Size != c.inst.Size.Name {
		return response{}, errdefs.New(errdefs.ErrInvalidArgument,
			fmt.Sprintf("sizes are fixed for an instance's life; create a new instance with --size %s", req.Size),
			"the size of %s is %s and cannot change", c.inst.Name, c.inst.Size.Name)
	}
	return ok(s.apiInstance(c.inst)), nil
}

func (s *Server) startInstance(c call) (response, error) {
	return opResponse(s.Lifecycle.Start(c.c, c.inst))
}

func (s *Server) stopInstance(c call) (response, error) {
	return opResponse(s.Lifecycle.Stop(c.c, c.inst))
}

func (s *Server) restartInstance(c call) (response, error) {
	return opResponse(s.Lifecycle.Restart(c.c, c.inst))
}

func (s *Server) deleteInstance(c call) (response, error) {
	return opResponse(s.Lifecycle.Delete(c.c, c.inst))
}

func opResponse(op store.Operation, err error) (response, error) {
	if err != nil {
		return response{}, err
	}
	return accepted(apiOperation(op)), nil
}

func (s *Server) execInstance(c call) (response, error) {
	var req api.ExecRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	s.Policy.Activity.Touch(c.inst.ID)
	out, err := s.Lifecycle.Exec(c.ctx(), c.inst, req)
	return ok(out), err
}

func (s *Server) getLogs(c call) (response, error) {
	out, err := s.Lifecycle.Logs(c.ctx(), c.inst, c.r.URL.Query().Get("kind"))
	return ok(out), err
}

func (s *Server) hostShutdown(c call) (response, error) {
	s.Lifecycle.HostShutdown(c.ctx(), s.HostShutdownBound)
	return ok(map[string]string{"result": "running instances shut down; they start again at the next labvmd start"}), nil
}
