package authz

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
)

// Assignments lists the stored role assignments.
func (a *Authorizer) Assignments() ([]store.RoleAssignment, error) {
	var list []store.RoleAssignment
	err := a.Store.View(func(tx *store.Tx) error {
		var err error
		list, err = tx.Roles()
		return err
	})
	return list, err
}

// Assign gives a role to a user or an @group; the user's uid is recorded,
// so the assignment does not pass to a later account of the same name.
//
// In a cluster the assignment is written to the cluster first: a change
// the cluster cannot take is refused, so no host's roles drift.
func (a *Authorizer) Assign(ctx context.Context, by Caller, principal, roleName string) (store.RoleAssignment, error) {
	role, err := ParseRole(roleName)
	if err != nil {
		return store.RoleAssignment{}, err
	}
	name, group := store.ParsePrincipal(principal)
	if name == "root" && !group {
		return store.RoleAssignment{}, errdefs.Invalidf("root is always an owner; nothing to assign")
	}
	uid, err := LookupPrincipal(name, group)
	if err != nil {
		return store.RoleAssignment{}, err
	}
	as := store.RoleAssignment{Principal: name, Group: group, UID: uid, Role: role.String(), AssignedBy: by.Name, AssignedAt: time.Now().UTC()}
	if a.Shared != nil {
		if err := a.Shared.PutRole(ctx, as); err != nil {
			return store.RoleAssignment{}, err
		}
	}
	if err := a.Store.Update(func(tx *store.Tx) error { return tx.PutRole(as) }); err != nil {
		return store.RoleAssignment{}, err
	}
	return as, nil
}

// Remove takes a role from a user or an @group. The last owner besides
// root cannot be removed. In a cluster the removal is made there first
// (outside the store's transaction: etcd may be slow to answer).
func (a *Authorizer) Remove(ctx context.Context, principal, roleName string) error {
	role, err := ParseRole(roleName)
	if err != nil {
		return err
	}
	name, group := store.ParsePrincipal(principal)
	if a.Shared != nil {
		held := false
		if err := a.Store.View(func(tx *store.Tx) error {
			held = tx.HasRole(name, group, role.String())
			return checkLastOwner(tx, principal, role)
		}); err != nil {
			return err
		}
		if held {
			if err := a.Shared.DeleteRole(ctx, store.RoleAssignment{Principal: name, Group: group, Role: role.String()}); err != nil {
				return err
			}
		}
	}
	return a.Store.Update(func(tx *store.Tx) error {
		if err := checkLastOwner(tx, principal, role); err != nil {
			return err
		}
		if err := tx.DeleteRole(name, group, role.String()); errors.Is(err, store.ErrNotFound) {
			return errdefs.New(errdefs.ErrNotFound, "`labvm role list` shows the assignments", "%s", fmt.Sprintf("%s has no %s role", principal, role))
		} else if err != nil {
			return err
		}
		return nil
	})
}

// checkLastOwner refuses to remove the owner role when only one owner
// besides root is left: losing the last would leave only root to manage
// the host.
func checkLastOwner(tx *store.Tx, principal string, role Role) error {
	if role != RoleOwner {
		return nil
	}
	list, err := tx.Roles()
	if err != nil {
		return err
	}
	owners := 0
	for _, as := range list {
		if as.Role == RoleOwner.String() {
			owners++
		}
	}
	if owners == 1 {
		return errdefs.New(errdefs.ErrConflict, "", "%s is the last owner besides root; assign another owner first", principal)
	}
	return nil
}
