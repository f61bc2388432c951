package httpapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// TestEventsCarryInstanceStates: with ?instances=1 the stream carries an
// instance's state written without any operation, to its own user and
// to readers only; without the parameter, operations alone.
func TestEventsCarryInstanceStates(t *testing.T) {
	uid := func(n int) *int { return &n }
	alice := vm.Instance{ID: "a11ce0000000a11c", Name: "alice-dev", State: vm.StateRunning, VNet: "default",
		Creator: "alice", CreatorUID: uid(1500), Size: vm.DefaultSizes()[0], Image: "tiny", CreatedAt: time.Now().UTC()}
	alice.Domain = vm.DomainName(alice.Name, alice.ID)
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), func(tx *store.Tx) error {
		if err := tx.PutRole(store.RoleAssignment{Principal: "rita", UID: uid(1003), Role: "reader"}); err != nil {
			return err
		}
		return tx.CreateInstance(alice)
	})
	h := td.API().Handler()
	streams := []struct {
		name   string
		caller authz.Caller
		path   string
		sees   bool
	}{
		{"own user", authz.Caller{UID: 1500, Name: "alice"}, "/v1/events?instances=1", true},
		{"reader", authz.Caller{UID: 1003, Name: "rita"}, "/v1/events?instances=true", true},
		{"stranger", authz.Caller{UID: 1666, Name: "mallory"}, "/v1/events?instances=1", false},
		{"re-created account", authz.Caller{UID: 2500, Name: "alice"}, "/v1/events?instances=1", false},
		{"without the parameter", authz.Caller{UID: 1500, Name: "alice"}, "/v1/events", false},
	}
	before := td.Ops().Events.Subscribers()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bodies := make([]*httptest.ResponseRecorder, len(streams))
	var wg sync.WaitGroup
	for i, st := range streams {
		c := st.caller
		req := httptest.NewRequestWithContext(authz.WithCaller(ctx, &c), http.MethodGet, st.path, nil)
		bodies[i] = httptest.NewRecorder()
		wg.Add(1)
		go func() { defer wg.Done(); h.ServeHTTP(bodies[i], req) }()
	}
	for deadline := time.Now().Add(5 * time.Second); td.Ops().Events.Subscribers() < before+len(streams); {
		if time.Now().After(deadline) {
			t.Fatal("the streams never subscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// What reconcile does when it finds the domain gone: a state
	// written without an operation.
	// (The daemon's own start may have moved the seeded record: the
	// change is from whatever it holds now.)
	var was vm.State
	if err := td.Store().Update(func(tx *store.Tx) error {
		inst, err := tx.InstanceByName(alice.Name)
		if err != nil {
			return err
		}
		was = inst.State
		inst.State, inst.StateReason = vm.StateStopped, "domain found gone"
		return tx.PutInstance(inst)
	}); err != nil {
		t.Fatal(err)
	}
	// The streams are read once they end; the change was published
	// during the commit, so this is the time to encode it, with room
	// for a loaded machine.
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	if was == vm.StateStopped {
		t.Fatal("the seeded instance is already Stopped: no change to see")
	}
	want := `{"event":"instance","id":"a11ce0000000a11c","name":"alice-dev","state":"Stopped","previous":"` + was.String() + `","state_reason":"domain found gone","at":`
	for i, st := range streams {
		body := bodies[i].Body.String()
		if bodies[i].Code != http.StatusOK {
			t.Errorf("%s: status %d %s", st.name, bodies[i].Code, body)
			continue
		}
		if strings.Contains(body, want) != st.sees || (!st.sees && strings.Contains(body, "alice-dev")) {
			t.Errorf("%s: stream %q; want the change: %v", st.name, body, st.sees)
		}
	}
	// A parameter the stream does not know is refused, not ignored.
	for _, q := range []string{"?instance=1", "?instances=yes"} {
		c := authz.Caller{UID: 1500, Name: "alice"}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(authz.WithCaller(context.Background(), &c), http.MethodGet, "/v1/events"+q, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("/v1/events%s: status %d, want 400", q, rec.Code)
		}
	}
}
