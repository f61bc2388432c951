package vnets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
)

// fakeNet records what the engine asks of the host. With ports set, it
// is a PortFirewall too.
type fakeNet struct {
	mu       sync.Mutex
	applies  []network.FirewallSpec
	adds     []network.FirewallPort
	removes  []network.FirewallPort
	vnets    []network.FirewallVNet
	portErr  error
	inFlight int // firewall changes running at once
	overlap  bool
}

func (f *fakeNet) enter() func() {
	f.mu.Lock()
	f.inFlight++
	f.overlap = f.overlap || f.inFlight > 1
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}
}

func (f *fakeNet) EnsureBridge(context.Context, network.Bridge) error { return nil }
func (f *fakeNet) DeleteBridge(context.Context, string) error         { return nil }
func (f *fakeNet) EnableForwarding() error                            { return nil }
func (f *fakeNet) RoutesOverlapping(netip.Prefix, ...string) ([]string, error) {
	return nil, nil
}

func (f *fakeNet) ApplyFirewall(_ context.Context, spec network.FirewallSpec) error {
	defer f.enter()()
	if _, err := network.BuildFirewall(spec); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies = append(f.applies, spec)
	return nil
}

// portNet is a fakeNet that can change one port.
type portNet struct{ *fakeNet }

func (f portNet) AddPort(_ context.Context, table string, v network.FirewallVNet, p network.FirewallPort) error {
	return f.port(table, v, p, &f.adds)
}

func (f portNet) RemovePort(_ context.Context, table string, v network.FirewallVNet, p network.FirewallPort) error {
	return f.port(table, v, p, &f.removes)
}

func (f portNet) port(table string, v network.FirewallVNet, p network.FirewallPort, into *[]network.FirewallPort) error {
	defer f.enter()()
	if _, err := network.BuildPortChange(table, v, p); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.portErr != nil {
		return f.portErr
	}
	*into = append(*into, p)
	f.vnets = append(f.vnets, v)
	return nil
}

var _ PortFirewall = portNet{}

func newEngine(t *testing.T, hn HostNetwork) *Engine {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "labvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := New(Config{
		DataDir: t.TempDir(), FirewallTable: "lvtest", BridgePrefix: "lvt",
		Default: VNetConfig{Name: "default", Bridge: "lvt0", SubnetName: "default",
			Subnet: netip.MustParsePrefix("10.177.0.0/24"), Egress: network.EgressNAT},
	}, st, hn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := e.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

// addInstance records an instance on the default VNet, as a create does.
func addInstance(t *testing.T, e *Engine, n int) vm.Instance {
	t.Helper()
	id := fmt.Sprintf("%012x0000", n+1)
	inst := vm.Instance{ID: id, Name: fmt.Sprintf("i%d", n), VNet: "default", Subnet: "default",
		MAC: network.MAC(id), IP: netip.AddrFrom4([4]byte{10, 177, 0, byte(10 + n)})}
	if err := e.store.Update(func(tx *store.Tx) error { return tx.CreateInstance(inst) }); err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestInstancePortsChangeOnePort(t *testing.T) {
	f := &fakeNet{}
	e := newEngine(t, portNet{f})
	inst := addInstance(t, e, 0)
	want := network.FirewallPort{Name: network.PortName(inst.ID), MAC: inst.MAC, IP: inst.IP}

	if err := e.AddInstancePort(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	if err := e.RemoveInstancePort(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	if len(f.applies) != 1 {
		t.Errorf("%d full applies, want only Setup's", len(f.applies))
	}
	if len(f.adds) != 1 || f.adds[0] != want || len(f.removes) != 1 || f.removes[0] != want {
		t.Errorf("adds %v, removes %v; want %v once each", f.adds, f.removes, want)
	}
	v := f.vnets[0]
	if v.Name != "default" || v.PeerTraffic != network.PeerDeny || len(v.Gateways) != 1 || v.Gateways[0] != netip.MustParseAddr("10.177.0.1") {
		t.Errorf("port's VNet = %+v", v)
	}

	// An instance that gave its address back has no port left.
	inst.IP = netip.Addr{}
	if err := e.RemoveInstancePort(context.Background(), inst); err != nil || len(f.removes) != 1 {
		t.Errorf("RemoveInstancePort without an address = %v, %d removes", err, len(f.removes))
	}
	if err := e.AddInstancePort(context.Background(), inst); err == nil {
		t.Error("AddInstancePort without an address succeeded")
	}
}

func TestInstancePortFallsBackOnAFullSync(t *testing.T) {
	for _, tt := range []struct {
		name string
		hn   func(*fakeNet) HostNetwork
	}{
		{"port change fails", func(f *fakeNet) HostNetwork { f.portErr = errors.New("no such table"); return portNet{f} }},
		{"host cannot change one port", func(f *fakeNet) HostNetwork { return f }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeNet{}
			e := newEngine(t, tt.hn(f))
			inst := addInstance(t, e, 0)
			if err := e.AddInstancePort(context.Background(), inst); err != nil {
				t.Fatal(err)
			}
			if len(f.applies) != 2 {
				t.Fatalf("%d full applies, want Setup's and the fallback", len(f.applies))
			}
			ports := f.applies[1].VNets[0].Ports
			if len(ports) != 1 || ports[0].Name != network.PortName(inst.ID) {
				t.Errorf("fallback applied ports %v, want the instance's", ports)
			}
		})
	}
}

func TestInstancePortChangesAreSerialised(t *testing.T) {
	f := &fakeNet{}
	e := newEngine(t, portNet{f})
	var insts []vm.Instance
	for i := range 20 {
		insts = append(insts, addInstance(t, e, i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(insts))
	for _, inst := range insts {
		wg.Go(func() { errs <- e.AddInstancePort(context.Background(), inst) })
		wg.Go(func() { errs <- e.Sync(context.Background()) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if f.overlap {
		t.Error("two host firewall changes ran at once")
	}
	if len(f.adds) != len(insts) {
		t.Errorf("%d ports added, want %d", len(f.adds), len(insts))
	}
}
