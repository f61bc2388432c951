package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/labvm/labvm/test/hostreq"
)

func TestEnsureBridgeIdempotent(t *testing.T) {
	hostreq.RequireRoot(t) // creating bridges
	var b [3]byte
	rand.Read(b[:])
	name := "lvtbr" + hex.EncodeToString(b[:])
	ctx := context.Background()
	t.Cleanup(func() { _ = DeleteBridge(context.Background(), name) })

	br := Bridge{Name: name, Addresses: []netip.Prefix{netip.MustParsePrefix("10.254.77.1/24"), netip.MustParsePrefix("10.254.78.1/24")}}
	for i := 0; i < 2; i++ {
		if err := EnsureBridge(ctx, br); err != nil {
			t.Fatalf("EnsureBridge #%d: %v", i+1, err)
		}
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 2 {
		t.Fatalf("bridge addresses = %v, want the two gateways", addrs)
	}
	// Dropping a subnet drops its gateway.
	br.Addresses = br.Addresses[:1]
	if err := EnsureBridge(ctx, br); err != nil {
		t.Fatal(err)
	}
	addrs, _ = netlink.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.254.77.1/24" {
		t.Fatalf("bridge addresses = %v, want exactly 10.254.77.1/24", addrs)
	}
	over, err := RoutesOverlapping(netip.MustParsePrefix("10.254.77.0/25"))
	if err != nil {
		t.Fatal(err)
	}
	if len(over) == 0 {
		t.Fatal("overlap with the bridge's own route not found")
	}
	if err := DeleteBridge(ctx, name); err != nil {
		t.Fatal(err)
	}
	if ok, _ := BridgeExists(name); ok {
		t.Fatal("bridge still exists after delete")
	}
	if err := DeleteBridge(ctx, name); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}
