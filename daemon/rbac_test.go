package daemon

import (
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

func TestAuthorizationMatrix(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), func(tx *store.Tx) error {
		for _, a := range []store.RoleAssignment{
			{Principal: "olivia", Role: "owner"},
			{Principal: "carl", Role: "contributor"},
			{Principal: "rita", Role: "reader"},
			{Principal: "datasci", Group: true, Role: "contributor"},
		} {
			if err := tx.PutRole(a); err != nil {
				return err
			}
		}
		return nil
	})
	user := func(name string, groups ...string) Caller { return Caller{UID: 1000, Name: name, Groups: groups} }
	root := Caller{UID: 0, Name: "root"}
	carlsVM := vm.Instance{Name: "carl-dev", Creator: "carl"}
	bobsVM := vm.Instance{Name: "bob-dev", Creator: "olivia", AssignedTo: "bob"}

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
	}
	for _, tt := range tests {
		var err error
		if tt.inst == nil {
			err = td.authorize(tt.who, tt.perm)
		} else {
			err = td.authorizeInstance(tt.who, tt.perm, *tt.inst)
		}
		if tt.ok && err != nil {
			t.Errorf("%s %s: denied: %v", tt.who.Name, tt.perm, err)
		}
		if !tt.ok {
			if !api.IsCode(err, api.CodePermissionDenied) {
				t.Errorf("%s %s: got %v, want PermissionDenied", tt.who.Name, tt.perm, err)
			}
		}
	}
}

func TestQuotaIsCheckedAtomically(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	if _, err := td.client.SetQuota(t.Context(), "standardBSFamily", 1); err != nil {
		t.Fatal(err)
	}
	const n = 6
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			_, err := td.client.CreateInstance(t.Context(), api.CreateInstanceRequest{Name: "q-" + string(rune('a'+i)) + "-dev", Size: "Standard_B1s", Image: "tiny"})
			errs <- err
		}(i)
	}
	okCount := 0
	for i := 0; i < n; i++ {
		err := <-errs
		switch {
		case err == nil:
			okCount++
		case !api.IsCode(err, api.CodeQuotaExceeded):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if okCount != 1 {
		t.Fatalf("%d creates succeeded against a limit with room for one", okCount)
	}
	if _, err := td.client.SetQuota(t.Context(), "standardBSFamily", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := td.client.SetQuota(t.Context(), "", 0); err != nil {
		t.Fatal(err)
	}
	q, _ := td.client.Quota(t.Context())
	if q.Total.Used != 1 {
		t.Fatalf("total used = %d, want 1", q.Total.Used)
	}
	if _, err := td.client.SetQuota(t.Context(), "nosuchFamily", 3); !api.IsCode(err, api.CodeInvalidArgument) {
		t.Fatalf("unknown family: %v", err)
	}
}
