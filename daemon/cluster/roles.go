package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RoleCache is this host's copy of the cluster's role assignments (its
// store, which authorization reads): kept equal to the cluster's at each
// session and at each change, and left as it is while etcd is away.
type RoleCache interface {
	Roles() ([]store.RoleAssignment, error)
	ReplaceRoles([]store.RoleAssignment) error
}

// CacheRolesIn makes the cluster's roles the host's: call it before Run.
func (m *Member) CacheRolesIn(c RoleCache) { m.roles = c }

func (k keys) roles() string { return k.root + "roles/" }
func (k keys) role(a store.RoleAssignment) string {
	kind := "user"
	if a.Group {
		kind = "group"
	}
	return k.roles() + kind + "/" + a.Principal + "/" + a.Role
}
func (k keys) rolesSeeded() string { return k.root + "roles-seeded" }

// PutRole stores an assignment in the cluster.
func (m *Member) PutRole(ctx context.Context, a store.RoleAssignment) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := m.cli.Put(ctx, m.keys.role(a), string(b)); err != nil {
		return m.rolesRefused(err)
	}
	return nil
}

// DeleteRole removes an assignment from the cluster.
func (m *Member) DeleteRole(ctx context.Context, a store.RoleAssignment) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := m.cli.Delete(ctx, m.keys.role(a)); err != nil {
		return m.rolesRefused(err)
	}
	return nil
}

func (m *Member) rolesRefused(err error) error {
	return &errdefs.Error{Kind: errdefs.ErrUnavailable, Err: err,
		Msg:  fmt.Sprintf("role changes are refused: roles are shared through the cluster registry (etcd at %s), which is unreachable: %v", strings.Join(m.cfg.Endpoints, ", "), err),
		Hint: "the roles every host cached still apply; change them again once etcd answers"}
}

// syncRoles makes the cache equal to the cluster's roles and returns the
// revision they were read at. The first host of a cluster seeds it with
// its own assignments; every later host takes the cluster's.
func (m *Member) syncRoles(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	local, err := m.roles.Roles()
	if err != nil {
		return 0, err
	}
	seed := []clientv3.Op{clientv3.OpPut(m.keys.rolesSeeded(), m.cfg.Host)}
	for _, a := range local {
		b, err := json.Marshal(a)
		if err != nil {
			return 0, err
		}
		seed = append(seed, clientv3.OpPut(m.keys.role(a), string(b)))
	}
	if len(seed) > maxTxnOps {
		seed = seed[:maxTxnOps] // a host with more assignments seeds the first ones
		m.log.Warn("seeding the cluster with this host's first role assignments only", "seeded", maxTxnOps-1, "have", len(local))
	}
	if _, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(m.keys.rolesSeeded()), "=", 0)).Then(seed...).Commit(); err != nil {
		return 0, fmt.Errorf("seed the cluster's roles: %w", err)
	}
	return m.loadRoles(ctx)
}

// loadRoles reads the cluster's roles into the cache.
func (m *Member) loadRoles(ctx context.Context) (int64, error) {
	resp, err := m.cli.Get(ctx, m.keys.roles(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read the cluster's roles: %w", err)
	}
	list := make([]store.RoleAssignment, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var a store.RoleAssignment
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			m.log.Warn("skipping an unreadable role assignment in the cluster", "key", string(kv.Key), "error", err)
			continue
		}
		list = append(list, a)
	}
	if err := m.roles.ReplaceRoles(list); err != nil {
		return 0, fmt.Errorf("cache the cluster's roles: %w", err)
	}
	return resp.Header.Revision, nil
}
