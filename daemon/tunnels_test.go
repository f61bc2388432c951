package daemon_test

import (
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/store"
)

// testSSHKey is a throwaway public key; only its syntax matters here.
const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGDf+vlQWpXprKNh592udedeuAMVF+8vuNs371GV7i7/ test@labvm"

// TestTunnelRefusalsBeforeUpgrade checks every refusal a tunnel or console
// request gets while it is still plain HTTP. The fake hypervisor carries
// no bytes, so nothing here gets as far as dialling a guest.
func TestTunnelRefusalsBeforeUpgrade(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx := t.Context()
	withKey := daemontest.TinyReq("keyed-dev")
	withKey.SSHPublicKey = testSSHKey
	for _, req := range []api.CreateInstanceRequest{withKey, daemontest.TinyReq("keyless-dev"), daemontest.TinyReq("stopped-dev")} {
		if _, err := td.Create(t, req); err != nil {
			t.Fatalf("create %s: %v", req.Name, err)
		}
	}
	op, err := td.Client.Stop(ctx, "stopped-dev")
	if err == nil {
		_, err = td.Client.Wait(ctx, op.ID, nil)
	}
	if err != nil {
		t.Fatalf("stop: %v", err)
	}

	tunnel := func(name string, port int) func() error {
		return func() error {
			conn, err := td.Client.Tunnel(ctx, name, port)
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
			_, err := td.Client.Console(ctx, "stopped-dev")
			return err
		}, api.CodeConflict, "start it first"},
		{"console without a console-capable hypervisor", func() error {
			_, err := td.Client.Console(ctx, "keyed-dev")
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
		if err := td.Store().View(func(tx *store.Tx) error {
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
