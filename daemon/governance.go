package daemon

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

func (d *Daemon) whoami(r *http.Request, c Caller) (response, error) {
	role, err := d.roleOf(c)
	if err != nil {
		return response{}, err
	}
	out := api.WhoAmI{User: c.Name, UID: c.UID, Groups: c.Groups, Role: role.String(), Rights: []string{}}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	for p := PermRead; p <= PermManageNetworks; p++ {
		if need, ok := minRole[p]; ok && role >= need {
			out.Rights = append(out.Rights, p.String())
		}
	}
	out.Rights = append(out.Rights, PermAppAccess.String()+" (own instances only)")
	if c.IsRoot() {
		out.Note = "root is always an owner"
	}
	return ok(out), nil
}

func (d *Daemon) listRoles(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermRead); err != nil {
		return response{}, err
	}
	var list []store.RoleAssignment
	err := d.store.View(func(tx *store.Tx) error {
		var err error
		list, err = tx.Roles()
		return err
	})
	out := []api.RoleAssignment{{Principal: "root", Role: RoleOwner.String(), AssignedBy: "built in"}}
	for _, a := range list {
		out = append(out, api.RoleAssignment{Principal: store.FormatPrincipal(a.Principal, a.Group), Role: a.Role, AssignedBy: a.AssignedBy, AssignedAt: a.AssignedAt})
	}
	return ok(out), err
}

func (d *Daemon) assignRole(r *http.Request, c Caller) (response, error) {
	var req api.RoleAssignment
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	noteTarget(r, req.Principal)
	if err := d.authorize(c, PermManageRoles); err != nil {
		return response{}, err
	}
	role, err := ParseRole(req.Role)
	if err != nil {
		return response{}, err
	}
	name, group := store.ParsePrincipal(req.Principal)
	if name == "root" && !group {
		return response{}, invalidf("root is always an owner; nothing to assign")
	}
	if err := lookupPrincipal(name, group); err != nil {
		return response{}, err
	}
	a := store.RoleAssignment{Principal: name, Group: group, Role: role.String(), AssignedBy: c.Name, AssignedAt: time.Now().UTC()}
	if err := d.store.Update(func(tx *store.Tx) error { return tx.PutRole(a) }); err != nil {
		return response{}, err
	}
	return ok(api.RoleAssignment{Principal: req.Principal, Role: a.Role, AssignedBy: a.AssignedBy, AssignedAt: a.AssignedAt}), nil
}

func (d *Daemon) removeRole(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermManageRoles); err != nil {
		return response{}, err
	}
	principal, roleName := r.PathValue("principal"), r.PathValue("role")
	noteTarget(r, principal)
	role, err := ParseRole(roleName)
	if err != nil {
		return response{}, err
	}
	name, group := store.ParsePrincipal(principal)
	err = d.store.Update(func(tx *store.Tx) error {
		if role == RoleOwner {
			// An owner besides root must remain once there was one:
			// losing the last would leave only root to manage the host.
			list, err := tx.Roles()
			if err != nil {
				return err
			}
			owners := 0
			for _, a := range list {
				if a.Role == RoleOwner.String() {
					owners++
				}
			}
			if owners == 1 {
				return fmt.Errorf("%s is the last owner besides root; assign another owner first: %w", principal, errInUse)
			}
		}
		if err := tx.DeleteRole(name, group, role.String()); errors.Is(err, store.ErrNotFound) {
			return &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("%s has no %s role", principal, role), Hint: "`labvm role list` shows the assignments"}
		} else if err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return response{}, err
	}
	return ok(map[string]string{"removed": principal + " " + role.String()}), nil
}

// QuotaConfig are the configured core limits; owners can change them,
// and the stored values then win.
type QuotaConfig struct {
	Total    int
	Families map[string]int
}

func (d *Daemon) quotaLimits(tx *store.Tx) (store.QuotaLimits, error) {
	q, set, err := tx.QuotaLimits()
	if err != nil || set {
		return q, err
	}
	fams := map[string]int{}
	for k, v := range d.cfg.Quota.Families {
		fams[k] = v
	}
	return store.QuotaLimits{Total: d.cfg.Quota.Total, Families: fams}, nil
}

// coresUsed counts every instance's cores, whatever its state: cores are
// taken at create and given back only at delete, so a stopped instance
// can always start again.
func coresUsed(list []vm.Instance) (total int, byFamily map[string]int) {
	byFamily = map[string]int{}
	for _, inst := range list {
		total += inst.Size.VCPUs
		byFamily[inst.Size.Family] += inst.Size.VCPUs
	}
	return total, byFamily
}

// checkQuota runs inside the create transaction, so two concurrent
// creates are serialised by bbolt and cannot both take the last cores.
func (d *Daemon) checkQuota(tx *store.Tx, size vm.Size) error {
	limits, err := d.quotaLimits(tx)
	if err != nil {
		return err
	}
	// With no limit that applies there is nothing to count; counting
	// decodes every instance, inside the write transaction every create
	// waits for.
	if limits.Total <= 0 && limits.Families[size.Family] <= 0 {
		return nil
	}
	list, err := tx.Instances()
	if err != nil {
		return err
	}
	total, fam := coresUsed(list)
	if l := limits.Families[size.Family]; l > 0 && fam[size.Family]+size.VCPUs > l {
		return &api.Error{Code: api.CodeQuotaExceeded,
			Message: fmt.Sprintf("quota of family %s exceeded: %d of %d cores used, %s needs %d", size.Family, fam[size.Family], l, size.Name, size.VCPUs),
			Hint:    "delete an instance of that family (stopping does not free cores), pick a smaller size, or ask an owner to raise the limit"}
	}
	if limits.Total > 0 && total+size.VCPUs > limits.Total {
		return &api.Error{Code: api.CodeQuotaExceeded,
			Message: fmt.Sprintf("host core quota exceeded: %d of %d cores used, %s needs %d", total, limits.Total, size.Name, size.VCPUs),
			Hint:    "delete an instance (stopping does not free cores), or ask an owner to raise the limit"}
	}
	return nil
}

func (d *Daemon) quotaView(tx *store.Tx) (api.Quota, error) {
	limits, err := d.quotaLimits(tx)
	if err != nil {
		return api.Quota{}, err
	}
	list, err := tx.Instances()
	if err != nil {
		return api.Quota{}, err
	}
	total, fam := coresUsed(list)
	names := map[string]bool{}
	for _, s := range d.sizes.List() {
		names[s.Family] = true
	}
	for f := range limits.Families {
		names[f] = true
	}
	for f := range fam {
		names[f] = true
	}
	out := api.Quota{Total: api.QuotaLine{Used: total, Limit: limits.Total}, Families: []api.QuotaLine{}}
	for f := range names {
		out.Families = append(out.Families, api.QuotaLine{Family: f, Used: fam[f], Limit: limits.Families[f]})
	}
	sort.Slice(out.Families, func(i, j int) bool { return out.Families[i].Family < out.Families[j].Family })
	return out, nil
}

func (d *Daemon) getQuota(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermRead); err != nil {
		return response{}, err
	}
	var out api.Quota
	err := d.store.View(func(tx *store.Tx) error {
		var err error
		out, err = d.quotaView(tx)
		return err
	})
	return ok(out), err
}

func (d *Daemon) setQuota(r *http.Request, c Caller) (response, error) {
	var req api.SetQuotaRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	noteTarget(r, req.Family)
	if err := d.authorize(c, PermManageQuota); err != nil {
		return response{}, err
	}
	if req.Limit < 0 || req.Limit > 1<<20 {
		return response{}, invalidf("limit %d: want 0 (no limit) or a positive number of cores", req.Limit)
	}
	if req.Family != "" {
		known := false
		for _, s := range d.sizes.List() {
			known = known || s.Family == req.Family
		}
		if !known {
			return response{}, invalidf("unknown VM family %q; `labvm sizes` shows the families", req.Family)
		}
	}
	var out api.Quota
	err := d.store.Update(func(tx *store.Tx) error {
		limits, err := d.quotaLimits(tx)
		if err != nil {
			return err
		}
		list, err := tx.Instances()
		if err != nil {
			return err
		}
		total, fam := coresUsed(list)
		used := total
		if req.Family != "" {
			used = fam[req.Family]
		}
		if req.Limit > 0 && req.Limit < used {
			return invalidf("limit %d is below the %d cores already used; delete instances first", req.Limit, used)
		}
		if limits.Families == nil {
			limits.Families = map[string]int{}
		}
		if req.Family == "" {
			limits.Total = req.Limit
		} else if req.Limit == 0 {
			delete(limits.Families, req.Family)
		} else {
			limits.Families[req.Family] = req.Limit
		}
		if err := tx.PutQuotaLimits(limits); err != nil {
			return err
		}
		out, err = d.quotaView(tx)
		return err
	})
	return ok(out), err
}

// updateInstance exists to refuse: an instance's size is fixed for life.
func (d *Daemon) updateInstance(r *http.Request, c Caller) (response, error) {
	inst, err := d.instanceByName(r.PathValue("name"))
	if err != nil {
		return response{}, err
	}
	if err := d.authorizeInstance(c, PermWrite, inst); err != nil {
		return response{}, err
	}
	var req api.UpdateInstanceRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	if req.Size != "" && req.Size != inst.Size.Name {
		return response{}, &api.Error{Code: api.CodeInvalidArgument,
			Message: fmt.Sprintf("the size of %s is %s and cannot change", inst.Name, inst.Size.Name),
			Hint:    fmt.Sprintf("sizes are fixed for an instance's life; create a new instance with --size %s", req.Size)}
	}
	return ok(d.apiInstance(inst)), nil
}
