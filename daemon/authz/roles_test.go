package authz

import (
	"path/filepath"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

func TestAuthorizationMatrix(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "labvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	uid := func(n int) *int { return &n }
	if err := st.Update(func(tx *store.Tx) error {
		for _, a := range []store.RoleAssignment{
			{Principal: "olivia", Role: "owner"},
			{Principal: "carl", Role: "contributor"},
			{Principal: "rita", Role: "reader"},
			// assigned to uid 1000; a later account "rob" with uid 2000 is
			// another person and inherits nothing.
			{Principal: "rob", UID: uid(1000), Role: "owner"},
			{Principal: "datasci", Group: true, Role: "contributor"},
		} {
			if err := tx.PutRole(a); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	az := &Authorizer{Store: st}
	user := func(name string, groups ...string) Caller { return Caller{UID: 1000, Name: name, Groups: groups} }
	root := Caller{UID: 0, Name: "root"}
	carlsVM := vm.Instance{Name: "carl-dev", Creator: "carl"}
	bobsVM := vm.Instance{Name: "bob-dev", Creator: "olivia", AssignedTo: "bob"}
	// made for the account alice had as uid 1000
	alicesVM := vm.Instance{Name: "alice-dev", Creator: "alice", CreatorUID: uid(1000)}
	newAlice := Caller{UID: 2000, Name: "alice"}

	tests := []struct {
		who  Caller
		perm Permission
		inst *vm.Instance
		ok   bool
	}{
		{root, PermManageRoles, nil, true},
		{user("olivia"), PermManageQuota, nil, true},
		{user("carl"), PermWrite, nil, true},
		{user("carl"), PermManageImages, nil, false},
		{user("rita"), PermRead, nil, true},
		{user("rita"), PermWrite, nil, false},
		{user("nobody"), PermRead, nil, false},
		{user("gina", "datasci"), PermWrite, nil, true},
		{user("gina", "other"), PermWrite, nil, false},
		// contributors manage any instance …
		{user("carl"), PermStop, &bobsVM, true},
		{user("carl"), PermDelete, &bobsVM, true},
		// … but application access is the instance's own user's alone.
		{user("carl"), PermAppAccess, &carlsVM, true},
		{user("carl"), PermAppAccess, &bobsVM, false},
		{user("olivia"), PermAppAccess, &bobsVM, false},
		{root, PermAppAccess, &bobsVM, false},
		{user("bob"), PermAppAccess, &bobsVM, true},
		// bob has no role but may use and start/stop his own instance.
		{user("bob"), PermStart, &bobsVM, true},
		{user("bob"), PermRead, &bobsVM, true},
		{user("bob"), PermDelete, &bobsVM, false},
		{user("bob"), PermRead, &carlsVM, false},
		{user("rita"), PermStop, &carlsVM, false},
		// identity is the account, not the name
		{user("alice"), PermAppAccess, &alicesVM, true},
		{newAlice, PermAppAccess, &alicesVM, false},
		{newAlice, PermStop, &alicesVM, false},
		{user("rob"), PermManageRoles, nil, true},
		{Caller{UID: 2000, Name: "rob"}, PermManageRoles, nil, false},
		// declared public permissions
		{user("nobody"), PermAnyone, nil, true},
		{user("nobody"), PermReadOwn, nil, true},
		{user("nobody"), PermHostAdmin, nil, false},
	}
	for _, tt := range tests {
		var err error
		if tt.inst == nil {
			err = az.Authorize(tt.who, tt.perm)
		} else {
			err = az.AuthorizeInstance(tt.who, tt.perm, *tt.inst)
		}
		if tt.ok && err != nil {
			t.Errorf("%s %s: denied: %v", tt.who.Name, tt.perm, err)
		}
		if !tt.ok {
			if errdefs.Code(err) != api.CodePermissionDenied {
				t.Errorf("%s %s: got %v, want PermissionDenied", tt.who.Name, tt.perm, err)
			}
		}
	}
}
