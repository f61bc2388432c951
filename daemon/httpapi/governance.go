package httpapi

import (
	"strconv"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
)

func (s *Server) whoami(c call) (response, error) {
	role, err := s.Authz.RoleOf(c.c)
	if err != nil {
		return response{}, err
	}
	out := api.WhoAmI{User: c.c.Name, UID: c.c.UID, Groups: c.c.Groups, Role: role.String(), Rights: []string{}}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	for _, p := range authz.Permissions() {
		if need, ok := authz.MinRole(p); ok && need > authz.RoleNone && role >= need {
			out.Rights = append(out.Rights, p.String())
		}
	}
	out.Rights = append(out.Rights, authz.PermAppAccess.String()+" (own instances only)")
	if c.c.IsRoot() {
		out.Note = "root is always an owner"
	}
	return ok(out), nil
}

func (s *Server) listRoles(c call) (response, error) {
	list, err := s.Authz.Assignments()
	out := []api.RoleAssignment{{Principal: "root", Role: authz.RoleOwner.String(), AssignedBy: "built in"}}
	for _, a := range list {
		out = append(out, api.RoleAssignment{Principal: store.FormatPrincipal(a.Principal, a.Group), Role: a.Role, AssignedBy: a.AssignedBy, AssignedAt: a.AssignedAt})
	}
	return ok(out), err
}

func (s *Server) assignRole(c call) (response, error) {
	var req api.RoleAssignment
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	c.target(req.Principal)
	a, err := s.Authz.Assign(c.r.Context(), c.c, req.Principal, req.Role)
	if err != nil {
		return response{}, err
	}
	return ok(api.RoleAssignment{Principal: req.Principal, Role: a.Role, AssignedBy: a.AssignedBy, AssignedAt: a.AssignedAt}), nil
}

func (s *Server) removeRole(c call) (response, error) {
	principal, role := c.r.PathValue("principal"), c.r.PathValue("role")
	c.target(principal)
	if err := s.Authz.Remove(c.r.Context(), principal, role); err != nil {
		return response{}, err
	}
	return ok(map[string]string{"removed": principal + " " + role}), nil
}

func (s *Server) getQuota(c call) (response, error) {
	out, err := s.Lifecycle.Quota()
	return ok(out), err
}

func (s *Server) setQuota(c call) (response, error) {
	var req api.SetQuotaRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	c.target(req.Family)
	out, err := s.Lifecycle.SetQuota(req)
	return ok(out), err
}

func (s *Server) listAudit(c call) (response, error) {
	q := c.r.URL.Query()
	f := store.AuditFilter{Target: q.Get("instance"), Caller: q.Get("caller"), Limit: 1000}
	if v := q.Get("since"); v != "" {
		dur, err := time.ParseDuration(v)
		if err != nil || dur <= 0 {
			return response{}, errdefs.Invalidf("since %q: want a duration like 30m or 24h", v)
		}
		f.Since = time.Now().Add(-dur)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return response{}, errdefs.Invalidf("limit %q: want a positive number", v)
		}
		f.Limit = n
	}
	entries, err := s.Audit.Entries(f)
	out := make([]api.AuditEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, api.AuditEntry{Seq: e.Seq, Time: e.Time, Caller: e.Caller, UID: e.UID, Action: e.Action,
			Target: e.Target, Outcome: e.Outcome, Code: e.Code, Message: e.Message, Operation: e.OpID})
	}
	return ok(out), err
}
