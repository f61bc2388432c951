package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// TestInstanceOperations: an instance's own user sees its operations
// without a role, whoever started them; readers see them; a stranger is
// refused; another instance's operations are never in the list.
func TestInstanceOperations(t *testing.T) {
	uid := func(n int) *int { return &n }
	mk := func(id, name, creator string, cuid int) vm.Instance {
		inst := vm.Instance{ID: id, Name: name, State: vm.StateStopped, VNet: "default", Creator: creator, CreatorUID: uid(cuid),
			Size: vm.DefaultSizes()[0], Image: "tiny", CreatedAt: time.Now().UTC().Add(-time.Minute)}
		inst.Domain = vm.DomainName(inst.Name, inst.ID)
		return inst
	}
	alice := mk("a11ce0000000a11c", "alice-dev", "alice", 1500)
	bob := mk("b0b0000000000b0b", "bob-dev", "bob", 1600)
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), func(tx *store.Tx) error {
		if err := tx.PutRole(store.RoleAssignment{Principal: "rita", UID: uid(1003), Role: "reader"}); err != nil {
			return err
		}
		if err := tx.CreateInstance(alice); err != nil {
			return err
		}
		return tx.CreateInstance(bob)
	})
	var want []string
	for _, b := range []struct {
		inst vm.Instance
		kind api.OperationKind
		who  string
	}{
		{alice, api.OpStart, "alice"},
		{bob, api.OpStart, "bob"},
		{alice, api.OpStop, "olivia"}, // an admin's operation on her instance
	} {
		op, err := td.Ops().Begin(b.kind, b.inst.Name, b.inst.ID, ops.Who{Name: b.who})
		if err != nil {
			t.Fatal(err)
		}
		op.Finish(nil)
		if b.inst.ID == alice.ID {
			want = append(want, op.ID())
		}
	}
	h := td.API().Handler()
	for _, tc := range []struct {
		caller authz.Caller
		status int
	}{
		{authz.Caller{UID: 1500, Name: "alice"}, http.StatusOK},
		{authz.Caller{UID: 1003, Name: "rita"}, http.StatusOK},
		{authz.Caller{UID: 0, Name: "root"}, http.StatusOK},
		{authz.Caller{UID: 1600, Name: "bob"}, http.StatusForbidden},
		{authz.Caller{UID: 1666, Name: "mallory"}, http.StatusForbidden},
	} {
		c := tc.caller
		req := httptest.NewRequestWithContext(authz.WithCaller(context.Background(), &c), http.MethodGet, "/v1/instances/alice-dev/operations", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("as %s: status %d %s; want %d", c.Name, rec.Code, firstLine(rec.Body.String()), tc.status)
			continue
		}
		if tc.status != http.StatusOK {
			continue
		}
		var list []api.Operation
		if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, op := range list {
			got = append(got, op.ID)
			if op.Target != alice.Name {
				t.Errorf("as %s: operation %s on %s in alice-dev's list", c.Name, op.ID, op.Target)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("as %s: operations %v, want %v", c.Name, got, want)
		}
	}
	// A name that does not exist: NotFound for a reader, refused for a
	// stranger (names cannot be probed).
	for _, tc := range []struct {
		caller authz.Caller
		status int
	}{
		{authz.Caller{UID: 1003, Name: "rita"}, http.StatusNotFound},
		{authz.Caller{UID: 1666, Name: "mallory"}, http.StatusForbidden},
	} {
		c := tc.caller
		req := httptest.NewRequestWithContext(authz.WithCaller(context.Background(), &c), http.MethodGet, "/v1/instances/nobody/operations", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("missing instance as %s: status %d, want %d", c.Name, rec.Code, tc.status)
		}
	}
}
