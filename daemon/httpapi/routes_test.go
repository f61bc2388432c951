package httpapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// TestEveryRouteIsAuthorizedFirst walks the whole route table for every
// kind of caller. Each request carries a body that is not JSON, so a
// handler that read the body before the permission check would answer 400
// where 403 is due. A route without a declared permission fails the test.
func TestEveryRouteIsAuthorizedFirst(t *testing.T) {
	uid := func(n int) *int { return &n }
	alice := vm.Instance{ID: "a11ce0000000a11c", Name: "alice-dev", State: vm.StateStopped, VNet: "default",
		Creator: "alice", CreatorUID: uid(1500), Size: vm.DefaultSizes()[0], Image: "tiny", CreatedAt: time.Now().UTC()}
	alice.Domain = vm.DomainName(alice.Name, alice.ID)
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), func(tx *store.Tx) error {
		for _, a := range []store.RoleAssignment{
			{Principal: "olivia", UID: uid(1001), Role: "owner"},
			{Principal: "carl", UID: uid(1002), Role: "contributor"},
			{Principal: "rita", UID: uid(1003), Role: "reader"},
		} {
			if err := tx.PutRole(a); err != nil {
				return err
			}
		}
		return tx.CreateInstance(alice)
	})
	// The instance is held by an operation, so a route that is allowed
	// through (delete, stop, …) ends in Conflict and changes nothing for
	// the routes walked after it.
	hold, err := td.Ops().Begin(api.OpStart, alice.Name, alice.ID, ops.Who{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Finish(nil)
	srv := td.API()
	callers := []authz.Caller{
		{UID: 0, Name: "root"},
		{UID: 1001, Name: "olivia"},
		{UID: 1002, Name: "carl"},
		{UID: 1003, Name: "rita"},
		{UID: 1500, Name: "alice"},   // the instance's own user, no role
		{UID: 1666, Name: "mallory"}, // no role, nothing of hers
		{UID: 2500, Name: "alice"},   // a re-created account named alice
	}
	az := &authz.Authorizer{Store: td.Store()}
	h := srv.Handler()
	for _, rt := range srv.Routes() {
		if rt.Permission == 0 {
			t.Errorf("%s declares no permission", rt.Pattern)
			continue
		}
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.NewReplacer("{name}", alice.Name, "{id}", "1", "{principal}", "rita", "{role}", "reader", "{subnet}", "default").Replace(path)
		for _, c := range callers {
			var want error
			if rt.Instance {
				want = az.AuthorizeInstance(c, rt.Permission, alice)
			} else {
				want = az.Authorize(c, rt.Permission)
			}
			stranger := c.Name == "mallory" || c.UID == 2500
			if stranger && want == nil && rt.Permission != authz.PermAnyone && rt.Permission != authz.PermReadOwn {
				t.Errorf("%s: %s (uid %d) may call it; a caller with no role and nothing of theirs must not", rt.Pattern, c.Name, c.UID)
			}
			ctx, cancel := context.WithTimeout(authz.WithCaller(context.Background(), &c), 300*time.Millisecond)
			req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader("not json {"))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			cancel()
			denied := rec.Code == http.StatusForbidden && strings.Contains(rec.Body.String(), string(api.CodePermissionDenied))
			switch {
			case want != nil && !denied:
				t.Errorf("%s as %s (uid %d): status %d %q; want 403 before the body is read", rt.Pattern, c.Name, c.UID, rec.Code, firstLine(rec.Body.String()))
			case rt.Permission == authz.PermReadOwn:
				// Allowed to everyone; the handler shows each caller only
				// what is theirs (or refuses one who has nothing).
				if stranger && strings.Contains(rec.Body.String(), alice.Name) {
					t.Errorf("%s as %s (uid %d) shows %s, which is not theirs", rt.Pattern, c.Name, c.UID, alice.Name)
				}
			case want == nil && denied:
				t.Errorf("%s as %s (uid %d): refused: %s", rt.Pattern, c.Name, c.UID, firstLine(rec.Body.String()))
			}
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
