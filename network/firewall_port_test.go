package network

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestBuildPortChange(t *testing.T) {
	spec := lockedSpec()
	port := FirewallPort{Name: "lvp00000000000d", MAC: "52:54:00:00:01:0D", IP: netip.MustParseAddr("10.250.1.13")}
	tests := []struct {
		name string
		vnet FirewallVNet
		want string
	}{
		{"peer deny", withPeers(spec.VNets[1], PeerDeny), `add element bridge labvm ports { "lvp00000000000d" }
add element bridge labvm port-mac { "lvp00000000000d" . 52:54:00:00:01:0d }
add element bridge labvm port-arp { "lvp00000000000d" . 52:54:00:00:01:0d . 10.250.1.13 }
add element bridge labvm port-ip { "lvp00000000000d" . 10.250.1.13 }
add element bridge labvm isolated { "lvp00000000000d" }
`},
		{"peer allow", spec.VNets[1], `add element bridge labvm ports { "lvp00000000000d" }
add element bridge labvm port-mac { "lvp00000000000d" . 52:54:00:00:01:0d }
add element bridge labvm port-arp { "lvp00000000000d" . 52:54:00:00:01:0d . 10.250.1.13 }
add element bridge labvm port-ip { "lvp00000000000d" . 10.250.1.13 }
add element bridge labvm peers-dev { "lvp00000000000d" }
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The VNet's other ports are not read.
			c, err := BuildPortChange("", tt.vnet, port)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.String(); got != tt.want {
				t.Errorf("BuildPortChange:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func withPeers(v FirewallVNet, p PeerTraffic) FirewallVNet {
	v.PeerTraffic = p
	return v
}

func TestFullBuildIsASequenceOfPortAdds(t *testing.T) {
	spec := lockedSpec()
	want, err := BuildFirewall(spec)
	if err != nil {
		t.Fatal(err)
	}
	empty := lockedSpec()
	for i := range empty.VNets {
		empty.VNets[i].Ports = nil
	}
	got, err := BuildFirewall(empty)
	if err != nil {
		t.Fatal(err)
	}
	for _, vi := range []int{1, 0} {
		v := spec.VNets[vi]
		for _, p := range slices.Backward(v.Ports) {
			c, err := BuildPortChange(spec.TableName, v, p)
			if err != nil {
				t.Fatal(err)
			}
			got.addPort(c)
		}
	}
	// Sets list their elements sorted, whatever the order of adds.
	if got.String() != want.String() {
		t.Fatalf("ports added one by one:\n%s\nfull build:\n%s", got, want)
	}
}

func TestBuildPortChangeRejects(t *testing.T) {
	good := FirewallPort{Name: "lvp00000000000d", MAC: "52:54:00:00:01:0d", IP: netip.MustParseAddr("10.250.1.13")}
	tests := []struct {
		name   string
		table  string
		change func(*FirewallVNet, *FirewallPort)
	}{
		{"bad table name", "bad table", func(*FirewallVNet, *FirewallPort) {}},
		{"VNet name unusable as a set name", "", func(v *FirewallVNet, _ *FirewallPort) { v.Name = "a b" }},
		{"unknown peer traffic", "", func(v *FirewallVNet, _ *FirewallPort) { v.PeerTraffic = 7 }},
		{"bad port name", "", func(_ *FirewallVNet, p *FirewallPort) { p.Name = "lvp 1" }},
		{"port named like its bridge", "", func(v *FirewallVNet, p *FirewallPort) { p.Name = v.Bridge }},
		{"bad MAC", "", func(_ *FirewallVNet, p *FirewallPort) { p.MAC = "52:54:00" }},
		{"multicast MAC", "", func(_ *FirewallVNet, p *FirewallPort) { p.MAC = "01:00:5e:00:00:01" }},
		{"address outside the subnet", "", func(_ *FirewallVNet, p *FirewallPort) { p.IP = netip.MustParseAddr("10.250.2.13") }},
		{"gateway address", "", func(_ *FirewallVNet, p *FirewallPort) { p.IP = netip.MustParseAddr("10.250.1.1") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, p := lockedSpec().VNets[1], good
			tt.change(&v, &p)
			if _, err := BuildPortChange(tt.table, v, p); !errors.Is(err, ErrInvalidFirewallSpec) {
				t.Fatalf("BuildPortChange = %v, want ErrInvalidFirewallSpec", err)
			}
		})
	}
}
