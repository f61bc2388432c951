package daemon_test

import (
	"context"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/vm"
)

// TestIdleShutdownSetDuringAnOperationStays: the idle shutdown is the
// user's and may be set while an operation holds the instance; the
// operation then writes the record it read when it began, and neither its
// state change nor the manifest it writes (what `labvm doctor --rebuild`
// reads) loses the idle shutdown.
func TestIdleShutdownSetDuringAnOperationStays(t *testing.T) {
	hv := daemontest.NewFakeHypervisor()
	hv.StartGate = make(chan struct{})
	td := daemontest.New(t, hv, nil)
	ctx := context.Background()
	op, err := td.Client.CreateInstance(ctx, daemontest.TinyReq("idle-mid-op"))
	if err != nil {
		close(hv.StartGate)
		t.Fatal(err)
	}
	set, err := td.Client.SetIdleShutdown(ctx, "idle-mid-op", "2h")
	close(hv.StartGate) // the create goes on with its copy of the record
	if err != nil {
		t.Fatalf("idle shutdown during the create: %v", err)
	}
	if set.IdleShutdown.Limit != "2h" || set.State == api.StateRunning {
		t.Fatalf("set during the create: state %s, idle shutdown %q; want not yet Running, 2h", set.State, set.IdleShutdown.Limit)
	}
	if op, err = td.Client.Wait(ctx, op.ID, nil); err != nil {
		t.Fatal(err)
	}
	got, err := td.Client.Instance(ctx, "idle-mid-op")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateRunning || got.IdleShutdown.Limit != "2h" {
		t.Errorf("after the create: state %s, idle shutdown %q; want Running, 2h", got.State, got.IdleShutdown.Limit)
	}
	m, err := td.Lifecycle().ReadManifest(got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.Instance.Policy.IdleShutdown != 2*time.Hour || m.Instance.State != vm.StateRunning {
		t.Errorf("manifest after the create: state %s, idle shutdown %s; want Running, 2h", m.Instance.State, m.Instance.Policy.IdleShutdown)
	}
}
