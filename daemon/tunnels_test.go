package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
)

// testSSHKey is a throwaway public key; only its syntax matters here.
const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGDf+vlQWpXprKNh592udedeuAMVF+8vuNs371GV7i7/ test@labvm"

// TestTunnelRefusalsBeforeUpgrade checks every refusal a tunnel or console
// request gets while it is still plain HTTP. The fake hypervisor carries
// no bytes, so nothing here gets as far as dialling a guest.
func TestTunnelRefusalsBeforeUpgrade(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	ctx := t.Context()
	withKey := tinyReq("keyed-dev")
	withKey.SSHPublicKey = testSSHKey
	for _, req := range []api.CreateInstanceRequest{withKey, tinyReq("keyless-dev"), tinyReq("stopped-dev")} {
		if _, err := td.create(t, req); err != nil {
			t.Fatalf("create %s: %v", req.Name, err)
		}
	}
	op, err := td.client.Stop(ctx, "stopped-dev")
	if err == nil {
		_, err = td.client.Wait(ctx, op.ID, nil)
	}
	if err != nil {
		t.Fatalf("stop: %v", err)
	}

	tunnel := func(name string, port int) func() error {
		return func() error {
			conn, err := td.client.Tunnel(ctx, name, port)
			if err == nil {
				conn.Close()
			}
			return err
		}
	}
	tests := []struct {
		name string
		call func() error
		code api.Code
		want string
	}{
		{"no such instance", tunnel("nope-dev", 22), api.CodeNotFound, `instance "nope-dev" not found`},
		{"port 0", tunnel("keyed-dev", 0), api.CodeInvalidArgument, "from 1 to 65535"},
		{"port 70000", tunnel("keyed-dev", 70000), api.CodeInvalidArgument, "from 1 to 65535"},
		{"SSH off", tunnel("keyless-dev", 22), api.CodeConflict, "created without --ssh-key"},
		{"stopped", tunnel("stopped-dev", 80), api.CodeConflict, "start it first"},
		{"console when stopped", func() error {
			_, err := td.client.Console(ctx, "stopped-dev")
			return err
		}, api.CodeConflict, "start it first"},
		{"console without a console-capable hypervisor", func() error {
			_, err := td.client.Console(ctx, "keyed-dev")
			return err
		}, api.CodeUnavailable, "no console access"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !api.IsCode(err, tt.code) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %s mentioning %q", err, tt.code, tt.want)
			}
		})
	}

	t.Run("every attempt is audited", func(t *testing.T) {
		var entries []store.AuditEntry
		if err := td.store.View(func(tx *store.Tx) error {
			var err error
			entries, err = tx.Audit(store.AuditFilter{Limit: 100})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, e := range entries {
			if strings.HasPrefix(e.Action, "computes/applicationaccess/action:") {
				got[e.Action+" "+e.Outcome]++
			}
		}
		want := map[string]int{
			"computes/applicationaccess/action:tunnel failed":  5,
			"computes/applicationaccess/action:console failed": 2,
		}
		for k, n := range want {
			if got[k] != n {
				t.Errorf("audit has %d × %q, want %d (all: %v)", got[k], k, n, got)
			}
		}
	})
}

// TestTunnelIsPersonal checks that only the instance's own user gets in:
// not another user, not root, whatever their role.
func TestTunnelIsPersonal(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	if _, err := td.create(t, tinyReq("own-dev")); err != nil {
		t.Fatal(err)
	}
	inst, err := td.instanceByName("own-dev")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		caller Caller
		path   string
	}{
		{"another user's tunnel", Caller{UID: 4242, Name: "mallory"}, "/tunnel?port=80"},
		{"another user's console", Caller{UID: 4242, Name: "mallory"}, "/console"},
		{"root's tunnel", Caller{UID: 0, Name: "root"}, "/tunnel?port=80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.caller.Name == inst.Owner() {
				t.Skipf("the test runs as %s, who owns the instance", inst.Owner())
			}
			r := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/v1/instances/own-dev"+tt.path, nil)
			r.SetPathValue("name", "own-dev")
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", tunnelProtocol)
			if strings.HasPrefix(tt.path, "/console") {
				_, err = td.openConsole(r, tt.caller)
			} else {
				_, err = td.openTunnel(r, tt.caller)
			}
			if !api.IsCode(err, api.CodePermissionDenied) || !strings.Contains(err.Error(), "own-dev is "+inst.Owner()+"'s instance") {
				t.Fatalf("got %v, want PermissionDenied naming the owner", err)
			}
		})
	}
}

// TestTunnelNeedsUpgrade checks that a plain GET is told what it lacks.
func TestTunnelNeedsUpgrade(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/instances/x-dev/tunnel?port=22", nil)
	r.SetPathValue("name", "x-dev")
	_, err := td.openTunnel(r, Caller{Name: "root"})
	if !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), "Upgrade: labvm-tunnel") {
		t.Fatalf("got %v, want InvalidArgument asking for the upgrade", err)
	}
}
