package authz

import (
	"testing"

	"github.com/labvm/labvm/daemon/api"
)

// TestWireNames keeps the names clients compare WhoAmI against equal to
// this package's.
func TestWireNames(t *testing.T) {
	if RoleOwner.String() != api.RoleOwner {
		t.Errorf("api.RoleOwner is %q, the owner role is %q", api.RoleOwner, RoleOwner)
	}
	if PermWrite.String() != api.RightWrite {
		t.Errorf("api.RightWrite is %q, PermWrite is %q", api.RightWrite, PermWrite)
	}
}
