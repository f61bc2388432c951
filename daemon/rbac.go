package daemon

import (
	"fmt"
	"os/user"
	"slices"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// Role is what an assignment grants. Roles are ordered: each includes the
// rights of the ones below it.
type Role int

const (
	RoleNone Role = iota
	RoleReader
	RoleContributor
	RoleOwner
)

var roleNames = [...]string{RoleNone: "none", RoleReader: "reader", RoleContributor: "contributor", RoleOwner: "owner"}

func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return fmt.Sprintf("Role(%d)", int(r))
	}
	return roleNames[r]
}

// ParseRole accepts the assignable roles.
func ParseRole(s string) (Role, error) {
	for i, n := range roleNames {
		if n == s && Role(i) != RoleNone {
			return Role(i), nil
		}
	}
	return RoleNone, invalidf("unknown role %q; use owner, contributor or reader", s)
}

// Permission is an action the API checks. Names follow the managed
// service's, so admins can map their existing policies.
type Permission int

const (
	PermRead Permission = iota + 1
	PermWrite
	PermDelete
	PermStart
	PermStop
	PermRestart
	PermAppAccess
	PermManageImages
	PermManageRoles
	PermManageQuota
	PermManageNetworks
)

var permNames = map[Permission]string{
	PermRead:           "computes/read",
	PermWrite:          "computes/write",
	PermDelete:         "computes/delete",
	PermStart:          "computes/start/action",
	PermStop:           "computes/stop/action",
	PermRestart:        "computes/restart/action",
	PermAppAccess:      "computes/applicationaccess/action",
	PermManageImages:   "images/write",
	PermManageRoles:    "roles/write",
	PermManageQuota:    "quotas/write",
	PermManageNetworks: "networks/write",
}

func (p Permission) String() string {
	if n, ok := permNames[p]; ok {
		return n
	}
	return fmt.Sprintf("Permission(%d)", int(p))
}

// minRole is the least role holding each permission. Application access
// is not here on purpose: no role grants it, only being the instance's
// own user does.
var minRole = map[Permission]Role{
	PermRead:           RoleReader,
	PermWrite:          RoleContributor,
	PermDelete:         RoleContributor,
	PermStart:          RoleContributor,
	PermStop:           RoleContributor,
	PermRestart:        RoleContributor,
	PermManageImages:   RoleOwner,
	PermManageRoles:    RoleOwner,
	PermManageQuota:    RoleOwner,
	PermManageNetworks: RoleOwner,
}

// ownUserMay are the permissions an instance's own user (its creator, or
// its assigned user) has on that instance whatever their role: an admin
// who creates a VM for bob means bob to use it.
var ownUserMay = []Permission{PermRead, PermStart, PermStop, PermRestart, PermAppAccess}

// roleOf is the caller's effective role: the highest of their own and
// their groups' assignments. root is always an owner.
func (d *Daemon) roleOf(c Caller) (Role, error) {
	if c.IsRoot() {
		return RoleOwner, nil
	}
	var list []store.RoleAssignment
	if err := d.store.View(func(tx *store.Tx) error {
		var err error
		list, err = tx.Roles()
		return err
	}); err != nil {
		return RoleNone, err
	}
	best := RoleNone
	for _, a := range list {
		if (!a.Group && a.Principal == c.Name) || (a.Group && slices.Contains(c.Groups, a.Principal)) {
			if r, err := ParseRole(a.Role); err == nil && r > best {
				best = r
			}
		}
	}
	return best, nil
}

// authorize checks a permission that is not about one instance.
func (d *Daemon) authorize(c Caller, p Permission) error {
	role, err := d.roleOf(c)
	if err != nil {
		return err
	}
	if need, ok := minRole[p]; ok && role >= need {
		return nil
	}
	return denied(c, p, role, "")
}

// authorizeInstance checks a permission on one instance.
func (d *Daemon) authorizeInstance(c Caller, p Permission, inst vm.Instance) error {
	own := c.Name == inst.Owner()
	if own && slices.Contains(ownUserMay, p) {
		return nil
	}
	if p == PermAppAccess {
		// Personal by design: not other contributors, not owners, not root.
		return &api.Error{
			Code:    api.CodePermissionDenied,
			Message: fmt.Sprintf("%s is %s's instance: only %s may use %s (%s)", inst.Name, inst.Owner(), inst.Owner(), p, c.Name),
			Hint:    "application access (exec, ssh, forward, open, console, jobs) belongs to the instance's own user; create your own instance",
		}
	}
	role, err := d.roleOf(c)
	if err != nil {
		return err
	}
	if need, ok := minRole[p]; ok && role >= need {
		return nil
	}
	return denied(c, p, role, inst.Name)
}

func denied(c Caller, p Permission, role Role, target string) error {
	msg := fmt.Sprintf("%s (role %s) lacks %s", c.Name, role, p)
	if target != "" {
		msg += " on " + target
	}
	need := minRole[p]
	return &api.Error{
		Code:    api.CodePermissionDenied,
		Message: msg,
		Hint:    fmt.Sprintf("an owner can grant it: sudo labvm role assign %s %s", c.Name, need),
	}
}

// lookupPrincipal checks that a user or group exists on this host.
func lookupPrincipal(name string, group bool) error {
	if group {
		if _, err := user.LookupGroup(name); err != nil {
			return invalidf("no Unix group %q on this host", name)
		}
		return nil
	}
	if _, err := user.Lookup(name); err != nil {
		return invalidf("no Unix user %q on this host", name)
	}
	return nil
}
