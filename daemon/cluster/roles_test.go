package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/test/etcdtest"
)

// memRoles is a RoleCache in memory.
type memRoles struct {
	mu   sync.Mutex
	list []store.RoleAssignment
}

func (r *memRoles) Roles() ([]store.RoleAssignment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]store.RoleAssignment(nil), r.list...), nil
}

func (r *memRoles) ReplaceRoles(list []store.RoleAssignment) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append([]store.RoleAssignment(nil), list...)
	return nil
}

func (r *memRoles) String() string {
	list, _ := r.Roles()
	var out []string
	for _, a := range list {
		out = append(out, a.Principal+"="+a.Role)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestRolesAreTheClusters(t *testing.T) {
	e := etcdtest.Start(t, 1)
	cl := fmt.Sprintf("roles%d", time.Now().UnixNano()%100000)
	ra := &memRoles{list: []store.RoleAssignment{{Principal: "alice", Role: "contributor"}}}
	rb := &memRoles{list: []store.RoleAssignment{{Principal: "mallory", Role: "owner"}}}
	startWith := func(host string, roles *memRoles) *Member {
		m, err := New(testConfig(t, e, cl, host), (&fakeHost{}).source, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.CacheRolesIn(roles)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done; _ = m.Close() })
		eventually(t, 10*time.Second, func() error {
			if ok, err := m.Connected(); !ok {
				return fmt.Errorf("%s not connected: %v", host, err)
			}
			return nil
		})
		return m
	}
	ma := startWith("node-a", ra)
	_ = startWith("node-b", rb)
	if got := rb.String(); got != "alice=contributor" {
		t.Fatalf("node-b's roles after joining = %q; want the cluster's (seeded by node-a), not its own", got)
	}
	ctx := context.Background()
	if err := ma.PutRole(ctx, store.RoleAssignment{Principal: "bob", Role: "reader"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if got := rb.String(); got != "alice=contributor bob=reader" {
			return fmt.Errorf("node-b's roles %q", got)
		}
		return nil
	})
	if err := ma.DeleteRole(ctx, store.RoleAssignment{Principal: "alice", Role: "contributor"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if got := rb.String(); got != "bob=reader" {
			return fmt.Errorf("node-b's roles %q", got)
		}
		return nil
	})

	e.Members[0].Kill()
	err := ma.PutRole(ctx, store.RoleAssignment{Principal: "carol", Role: "owner"})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "role changes are refused") {
		t.Fatalf("PutRole with etcd down: %v", err)
	}
	time.Sleep(3 * time.Second) // sessions end with the lease; the cache stays
	if got := rb.String(); got != "bob=reader" {
		t.Fatalf("node-b's cached roles with etcd down = %q", got)
	}
}
