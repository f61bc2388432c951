package lifecycle

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
)

// TestPhoneHomeListensOnGatewaysOnly: the listener binds the VNets'
// gateway addresses, not every address of the host, and follows them.
func TestPhoneHomeListensOnGatewaysOnly(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "labvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	// A loopback "gateway" stands in for a bridge address, so the test
	// can dial it without root.
	subnet := netip.MustParsePrefix("127.5.0.0/24")
	if err := st.Update(func(tx *store.Tx) error {
		return tx.PutVNet(store.VNet{Name: "default", Bridge: "lvtest0", CIDR: subnet, Subnets: []store.Subnet{{Name: "default", CIDR: subnet}}})
	}); err != nil {
		t.Fatal(err)
	}
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	_ = probe.Close()
	o := ops.New(ops.Options{Store: st})
	e := New(Config{PhoneHomePort: port}, Deps{Store: st, Ops: o, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	e.startPhoneHome(ctx)
	t.Cleanup(func() { cancel(); o.Wait() })

	dial := func(addr string) error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", addr, port), time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	if err := dial("127.5.0.1"); err != nil {
		t.Fatalf("the gateway 127.5.0.1 is not served: %v", err)
	}
	if err := dial("127.0.0.1"); err == nil {
		t.Fatal("phone-home answers on 127.0.0.1, which is no gateway")
	}
	// The VNet goes: so does its listener.
	if err := st.Update(func(tx *store.Tx) error { return tx.DeleteVNet("default") }); err != nil {
		t.Fatal(err)
	}
	e.NetworksChanged()
	if err := dial("127.5.0.1"); err == nil {
		t.Fatal("phone-home still answers on a removed gateway")
	}
}
