package authz

import (
	"fmt"
	"os/user"
	"slices"
	"strconv"

	"github.com/labvm/labvm/daemon/errdefs"
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
	return RoleNone, errdefs.Invalidf("unknown role %q; use owner, contributor or reader", s)
}

// Permission is an action the API checks. Names follow the managed
// service's, so admins can map their existing policies.
type Permission int

const (
	// PermAnyone is granted to every caller that reaches the socket
	// (being in the socket's group is the admission): version, whoami,
	// sizes. It is a declared permission, not a missing one.
	PermAnyone Permission = iota + 1
	// PermReadOwn lets any caller read what is theirs (their instances,
	// their operations); computes/read widens it to everything.
	PermReadOwn
	PermRead
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
	PermReadAudit
	PermHostAdmin
	// PermReadMetrics reads /metrics: counts and names of every user's
	// instances, so owners only.
	PermReadMetrics
	// PermManageDatasets declares and removes datasets: host directories
	// every guest created with them reads, so owners only.
	PermManageDatasets
	permEnd
)

var permNames = map[Permission]string{
	PermAnyone:         "anyone",
	PermReadOwn:        "computes/read (own)",
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
	PermReadAudit:      "audit/read",
	PermHostAdmin:      "host/admin",
	PermReadMetrics:    "metrics/read",
	PermManageDatasets: "datasets/write",
}

func (p Permission) String() string {
	if n, ok := permNames[p]; ok {
		return n
	}
	return fmt.Sprintf("Permission(%d)", int(p))
}

// Permissions lists every permission, for tests and documentation.
func Permissions() []Permission {
	out := make([]Permission, 0, int(permEnd)-1)
	for p := PermAnyone; p < permEnd; p++ {
		out = append(out, p)
	}
	return out
}

// MinRole is the least role holding each permission. Application access
// is not here on purpose: no role grants it, only being the instance's
// own user does.
var minRole = map[Permission]Role{
	PermAnyone:         RoleNone,
	PermReadOwn:        RoleNone,
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
	PermReadAudit:      RoleOwner,
	PermHostAdmin:      RoleOwner,
	PermReadMetrics:    RoleOwner,
	PermManageDatasets: RoleOwner,
}

// MinRole is the least role that holds p; false for application access,
// which no role grants.
func MinRole(p Permission) (Role, bool) {
	r, ok := minRole[p]
	return r, ok
}

// ownUserMay are the permissions an instance's own user (its creator, or
// its assigned user) has on that instance whatever their role: an admin
// who creates a VM for bob means bob to use it.
var ownUserMay = []Permission{PermReadOwn, PermRead, PermStart, PermStop, PermRestart, PermAppAccess}

// Authorizer answers permission questions from the stored roles.
type Authorizer struct {
	Store *store.Store
}

// RoleOf is the caller's effective role: the highest of their own and
// their groups' assignments. root is always an owner. A user assignment
// holds only for the account it was made for: the same name with another
// uid (a deleted and re-created account) gets nothing.
func (a *Authorizer) RoleOf(c Caller) (Role, error) {
	if c.IsRoot() {
		return RoleOwner, nil
	}
	var list []store.RoleAssignment
	if err := a.Store.View(func(tx *store.Tx) error {
		var err error
		list, err = tx.Roles()
		return err
	}); err != nil {
		return RoleNone, err
	}
	best := RoleNone
	for _, as := range list {
		match := as.Group && slices.Contains(c.Groups, as.Principal)
		if !as.Group && as.Principal == c.Name {
			match = as.UID == nil || *as.UID == c.UID
		}
		if match {
			if r, err := ParseRole(as.Role); err == nil && r > best {
				best = r
			}
		}
	}
	return best, nil
}

// Has reports whether the caller's role holds p.
func (a *Authorizer) Has(c Caller, p Permission) bool {
	return a.Authorize(c, p) == nil
}

// Authorize checks a permission that is not about one instance.
func (a *Authorizer) Authorize(c Caller, p Permission) error {
	need, ok := minRole[p]
	if ok && need == RoleNone {
		return nil
	}
	role, err := a.RoleOf(c)
	if err != nil {
		return err
	}
	if ok && role >= need {
		return nil
	}
	return denied(c, p, role, "")
}

// IsOwnUser reports whether c is the instance's own user: its creator,
// or the user it was created for. Names alone are not enough when the
// record knows the account's uid: a re-created account with the same
// name is another person.
func IsOwnUser(c Caller, inst vm.Instance) bool {
	if c.Name != inst.Owner() {
		return false
	}
	uid := inst.OwnerUID()
	return uid == nil || *uid == c.UID
}

// IsCreator reports whether c made the instance (an admin who created it
// for someone else still sees it in their list).
func IsCreator(c Caller, inst vm.Instance) bool {
	return c.Name == inst.Creator && (inst.CreatorUID == nil || *inst.CreatorUID == c.UID)
}

// AuthorizeInstance checks a permission on one instance.
func (a *Authorizer) AuthorizeInstance(c Caller, p Permission, inst vm.Instance) error {
	if IsOwnUser(c, inst) && slices.Contains(ownUserMay, p) {
		return nil
	}
	if p == PermAppAccess {
		// Personal by design: not other contributors, not owners, not root.
		return errdefs.New(errdefs.ErrPermissionDenied,
			"application access (exec, ssh, forward, open, console, jobs) belongs to the instance's own user; create your own instance",
			"%s is %s's instance: only %s may use %s (%s)", inst.Name, inst.Owner(), inst.Owner(), p, c.Name)
	}
	if p == PermReadOwn {
		p = PermRead
	}
	role, err := a.RoleOf(c)
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
	return errdefs.New(errdefs.ErrPermissionDenied,
		fmt.Sprintf("an owner can grant it: sudo labvm role assign %s %s", c.Name, need), "%s", msg)
}

// LookupPrincipal checks that a user or group exists on this host and
// returns a user's uid (nil for a group).
func LookupPrincipal(name string, group bool) (*int, error) {
	if group {
		if _, err := user.LookupGroup(name); err != nil {
			return nil, errdefs.Invalidf("no Unix group %q on this host", name)
		}
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, errdefs.Invalidf("no Unix user %q on this host", name)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, errdefs.Invalidf("user %q has a non-numeric uid %q", name, u.Uid)
	}
	return &uid, nil
}
