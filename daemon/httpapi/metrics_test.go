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
	"github.com/labvm/labvm/daemon/store"
)

// TestMetricsRoute: /metrics on the socket is for owners: it names every
// instance and its user. Others get 403 naming metrics/read; owners get
// the Prometheus text format.
func TestMetricsRoute(t *testing.T) {
	uid := func(n int) *int { return &n }
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
		return nil
	})
	if _, err := td.Create(t, daemontest.TinyReq("scraped")); err != nil {
		t.Fatal(err)
	}
	// The create is counted a moment after the client sees it done.
	for deadline := time.Now().Add(5 * time.Second); td.Ops().Running() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	h := td.API().Handler()
	get := func(c authz.Caller) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(authz.WithCaller(context.Background(), &c), http.MethodGet, "/metrics", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, c := range []authz.Caller{{UID: 1002, Name: "carl"}, {UID: 1003, Name: "rita"}, {UID: 1666, Name: "mallory"}} {
		rec := get(c)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), string(api.CodePermissionDenied)) ||
			!strings.Contains(rec.Body.String(), "metrics/read") {
			t.Errorf("GET /metrics as %s = %d %s; want 403 naming metrics/read", c.Name, rec.Code, firstLine(rec.Body.String()))
		}
		if strings.Contains(rec.Body.String(), "scraped") {
			t.Errorf("GET /metrics as %s shows the instance's name", c.Name)
		}
	}
	for _, c := range []authz.Caller{{UID: 1001, Name: "olivia"}, {UID: 0, Name: "root"}} {
		rec := get(c)
		body := rec.Body.String()
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4") {
			t.Errorf("GET /metrics as %s = %d %q; want 200 in the text format", c.Name, rec.Code, rec.Header().Get("Content-Type"))
		}
		for _, want := range []string{"# TYPE labvm_instances gauge\n", `labvm_instances{family="standardBSFamily",state="Running"} 1`,
			"\nlabvm_libvirt_up 1\n", `labvm_operations_total{kind="create",outcome="succeeded"} 1`} {
			if !strings.Contains(body, want) {
				t.Errorf("GET /metrics as %s lacks %q", c.Name, want)
			}
		}
	}
}
