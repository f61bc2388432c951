package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// TestSchedulePermissions: whoever may start and stop an instance may
// schedule it and set its idle shutdown; readers only see; strangers see
// nothing of it.
func TestSchedulePermissions(t *testing.T) {
	uid := func(n int) *int { return &n }
	alice := vm.Instance{ID: "a11ce0000000a11c", Name: "alice-dev", State: vm.StateStopped, VNet: "default",
		Creator: "alice", CreatorUID: uid(1500), Size: vm.DefaultSizes()[0], Image: "tiny", CreatedAt: time.Now().UTC()}
	alice.Domain = vm.DomainName(alice.Name, alice.ID)
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), func(tx *store.Tx) error {
		for _, a := range []store.RoleAssignment{
			{Principal: "carl", UID: uid(1002), Role: "contributor"},
			{Principal: "rita", UID: uid(1003), Role: "reader"},
		} {
			if err := tx.PutRole(a); err != nil {
				return err
			}
		}
		return tx.CreateInstance(alice)
	})
	h := td.API().Handler()
	call := func(c authz.Caller, method, path, body string) *httptest.ResponseRecorder {
		t.Helper()
		ctx, cancel := context.WithTimeout(authz.WithCaller(context.Background(), &c), 5*time.Second)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var (
		own      = authz.Caller{UID: 1500, Name: "alice"}
		contrib  = authz.Caller{UID: 1002, Name: "carl"}
		reader   = authz.Caller{UID: 1003, Name: "rita"}
		stranger = authz.Caller{UID: 1666, Name: "mallory"}
		recycled = authz.Caller{UID: 2500, Name: "alice"} // a re-created account
	)
	const sched = `{"stop":"0 19 * * 1-5","start":"0 8 * * 1-5","timezone":"UTC"}`
	for _, tc := range []struct {
		who          authz.Caller
		method, path string
		body         string
		want         int
	}{
		{own, "POST", "/v1/instances/alice-dev/schedules", sched, http.StatusCreated},
		{contrib, "POST", "/v1/instances/alice-dev/schedules", `{"stop":"@daily","timezone":"UTC"}`, http.StatusCreated},
		{reader, "POST", "/v1/instances/alice-dev/schedules", sched, http.StatusForbidden},
		{stranger, "POST", "/v1/instances/alice-dev/schedules", sched, http.StatusForbidden},
		{recycled, "POST", "/v1/instances/alice-dev/schedules", sched, http.StatusForbidden},
		{reader, "GET", "/v1/instances/alice-dev/schedules", "", http.StatusOK},
		{stranger, "GET", "/v1/instances/alice-dev/schedules", "", http.StatusForbidden},
		{reader, "DELETE", "/v1/instances/alice-dev/schedules/1", "", http.StatusForbidden},
		{stranger, "DELETE", "/v1/instances/alice-dev/schedules/1", "", http.StatusForbidden},
		{reader, "PUT", "/v1/instances/alice-dev/idle-shutdown", `{"idle_shutdown":"30m"}`, http.StatusForbidden},
		{stranger, "PUT", "/v1/instances/alice-dev/idle-shutdown", `{"idle_shutdown":"30m"}`, http.StatusForbidden},
		{own, "PUT", "/v1/instances/alice-dev/idle-shutdown", `{"idle_shutdown":"30m"}`, http.StatusOK},
		{contrib, "PUT", "/v1/instances/alice-dev/idle-shutdown", `{"idle_shutdown":"1h"}`, http.StatusOK},
		{contrib, "DELETE", "/v1/instances/alice-dev/schedules/2", "", http.StatusOK},
		{own, "DELETE", "/v1/instances/alice-dev/schedules/2", "", http.StatusNotFound},
		{own, "DELETE", "/v1/instances/alice-dev/schedules/x", "", http.StatusBadRequest},
	} {
		rec := call(tc.who, tc.method, tc.path, tc.body)
		if rec.Code != tc.want {
			t.Errorf("%s %s as %s (uid %d): %d %s; want %d", tc.method, tc.path, tc.who.Name, tc.who.UID, rec.Code, firstLine(rec.Body.String()), tc.want)
		}
	}
	// The list of all schedules: readers see alice's, strangers are
	// refused (they have nothing), alice sees hers.
	for _, tc := range []struct {
		who  authz.Caller
		want int // schedules listed; -1: refused
	}{{reader, 1}, {own, 1}, {stranger, -1}, {recycled, -1}} {
		rec := call(tc.who, "GET", "/v1/schedules", "")
		var list []api.Schedule
		_ = json.Unmarshal(rec.Body.Bytes(), &list)
		switch {
		case tc.want < 0 && rec.Code != http.StatusForbidden:
			t.Errorf("GET /v1/schedules as %s (uid %d): %d %s; want 403", tc.who.Name, tc.who.UID, rec.Code, firstLine(rec.Body.String()))
		case tc.want >= 0 && (rec.Code != http.StatusOK || len(list) != tc.want):
			t.Errorf("GET /v1/schedules as %s: %d, %d schedules; want %d", tc.who.Name, rec.Code, len(list), tc.want)
		}
	}
	inst, err := td.Lifecycle().InstanceByName("alice-dev")
	if err != nil || inst.Policy.IdleShutdown != time.Hour {
		t.Fatalf("idle shutdown after the calls: %s, %v", inst.Policy.IdleShutdown, err)
	}
}
