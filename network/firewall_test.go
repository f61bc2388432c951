package network

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func twoVNetSpec() FirewallSpec {
	return FirewallSpec{
		// Deliberately unsorted and with a duplicate port: the output
		// must not depend on either.
		VNets: []FirewallVNet{
			{Name: "lab", Bridge: "lvbr-lab", Subnet: netip.MustParsePrefix("10.250.2.0/24"), Egress: EgressNone},
			{Name: "dev", Bridge: "lvbr-dev", Subnet: netip.MustParsePrefix("10.250.1.0/24"), Egress: EgressNAT},
		},
		GatewayPorts: []GatewayPort{{"tcp", 8123}, {"udp", 53}, {"tcp", 53}, {"udp", 67}, {"udp", 53}},
	}
}

func TestBuildFirewallTwoVNets(t *testing.T) {
	rs, err := BuildFirewall(twoVNetSpec())
	if err != nil {
		t.Fatal(err)
	}
	const want = `table inet labvm {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		iifname "lvbr-dev" oifname "lvbr-dev" accept
		iifname "lvbr-lab" oifname "lvbr-lab" accept
		oifname "lvbr-dev" reject with icmpx admin-prohibited
		oifname "lvbr-lab" reject with icmpx admin-prohibited
		iifname "lvbr-dev" ip saddr 10.250.1.0/24 accept
		iifname "lvbr-dev" reject with icmpx admin-prohibited
		iifname "lvbr-lab" reject with icmpx admin-prohibited
	}

	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		iifname "lvbr-dev" ip daddr 10.250.1.1 tcp dport 53 accept
		iifname "lvbr-dev" ip daddr 10.250.1.1 tcp dport 8123 accept
		iifname "lvbr-dev" ip daddr 10.250.1.1 udp dport 53 accept
		iifname "lvbr-dev" udp dport 67 accept
		iifname "lvbr-dev" drop
		iifname "lvbr-lab" ip daddr 10.250.2.1 tcp dport 53 accept
		iifname "lvbr-lab" ip daddr 10.250.2.1 tcp dport 8123 accept
		iifname "lvbr-lab" ip daddr 10.250.2.1 udp dport 53 accept
		iifname "lvbr-lab" udp dport 67 accept
		iifname "lvbr-lab" drop
	}

	chain output {
		type filter hook output priority filter; policy accept;
		ct state established,related accept
		oifname "lvbr-dev" udp sport 67 udp dport 68 accept
		oifname "lvbr-dev" meta mark != 0x00004c56 meta l4proto tcp reject with tcp reset
		oifname "lvbr-dev" meta mark != 0x00004c56 reject with icmpx admin-prohibited
		oifname "lvbr-lab" udp sport 67 udp dport 68 accept
		oifname "lvbr-lab" meta mark != 0x00004c56 meta l4proto tcp reject with tcp reset
		oifname "lvbr-lab" meta mark != 0x00004c56 reject with icmpx admin-prohibited
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.250.1.0/24 oifname != "lvbr-dev" masquerade
	}
}
`
	if got := rs.String(); got != want {
		t.Errorf("BuildFirewall:\n%s\nwant:\n%s", got, want)
	}

	const wantForeign = `iifname "lvbr-dev" accept comment "labvm:labvm"
oifname "lvbr-dev" ct state established,related accept comment "labvm:labvm"
iifname "lvbr-lab" accept comment "labvm:labvm"
oifname "lvbr-lab" ct state established,related accept comment "labvm:labvm"
`
	var got strings.Builder
	for _, r := range rs.ForeignForward {
		got.WriteString(r.String() + "\n")
	}
	if got.String() != wantForeign {
		t.Errorf("ForeignForward:\n%s\nwant:\n%s", got.String(), wantForeign)
	}
}

func TestBuildFirewallVariants(t *testing.T) {
	dev := FirewallVNet{Name: "dev", Bridge: "lvbr-dev", Subnet: netip.MustParsePrefix("10.250.1.0/24")}
	tests := []struct {
		name        string
		spec        FirewallSpec
		contains    []string
		notContains []string
	}{
		{
			name:        "no VNets keeps empty base chains",
			spec:        FirewallSpec{TableName: "t1"},
			contains:    []string{"table inet t1 {", "chain postrouting {"},
			notContains: []string{"iifname", "masquerade"},
		},
		{
			name:        "egress none has no masquerade",
			spec:        FirewallSpec{VNets: []FirewallVNet{dev}},
			contains:    []string{`iifname "lvbr-dev" reject with icmpx admin-prohibited`},
			notContains: []string{"masquerade", "ip saddr"},
		},
		{
			name:        "no DHCP port, no DHCP reply exception",
			spec:        FirewallSpec{VNets: []FirewallVNet{dev}, GatewayPorts: []GatewayPort{{"udp", 53}}},
			contains:    []string{`iifname "lvbr-dev" ip daddr 10.250.1.1 udp dport 53 accept`},
			notContains: []string{"sport 67", "dport 67"},
		},
		{
			name:     "custom mark",
			spec:     FirewallSpec{VNets: []FirewallVNet{dev}, DaemonMark: 0x1234},
			contains: []string{"meta mark != 0x00001234"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := BuildFirewall(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			out := rs.String()
			for _, s := range tt.contains {
				if !strings.Contains(out, s) {
					t.Errorf("missing %q in\n%s", s, out)
				}
			}
			for _, s := range tt.notContains {
				if strings.Contains(out, s) {
					t.Errorf("unexpected %q in\n%s", s, out)
				}
			}
		})
	}
}

func TestBuildFirewallRejectsBadSpecs(t *testing.T) {
	ok := FirewallVNet{Name: "dev", Bridge: "lvbr-dev", Subnet: netip.MustParsePrefix("10.250.1.0/24")}
	with := func(change func(*FirewallVNet)) FirewallVNet {
		v := ok
		change(&v)
		return v
	}
	tests := []struct {
		name string
		spec FirewallSpec
	}{
		{"bad table name", FirewallSpec{TableName: "lab vm"}},
		{"unnamed VNet", FirewallSpec{VNets: []FirewallVNet{with(func(v *FirewallVNet) { v.Name = "" })}}},
		{"duplicate VNet", FirewallSpec{VNets: []FirewallVNet{ok, with(func(v *FirewallVNet) { v.Bridge = "other" })}}},
		{"shared bridge", FirewallSpec{VNets: []FirewallVNet{ok, with(func(v *FirewallVNet) {
			v.Name, v.Subnet = "b", netip.MustParsePrefix("10.250.9.0/24")
		})}}},
		{"bridge name too long", FirewallSpec{VNets: []FirewallVNet{with(func(v *FirewallVNet) { v.Bridge = "a-very-long-bridge" })}}},
		{"IPv6 subnet", FirewallSpec{VNets: []FirewallVNet{with(func(v *FirewallVNet) { v.Subnet = netip.MustParsePrefix("fd00::/64") })}}},
		{"host bits set", FirewallSpec{VNets: []FirewallVNet{with(func(v *FirewallVNet) { v.Subnet = netip.MustParsePrefix("10.250.1.1/24") })}}},
		{"overlapping subnets", FirewallSpec{VNets: []FirewallVNet{ok, with(func(v *FirewallVNet) {
			v.Name, v.Bridge, v.Subnet = "b", "lvbr-b", netip.MustParsePrefix("10.250.0.0/16")
		})}}},
		{"unknown egress", FirewallSpec{VNets: []FirewallVNet{with(func(v *FirewallVNet) { v.Egress = 7 })}}},
		{"bad protocol", FirewallSpec{GatewayPorts: []GatewayPort{{"sctp", 1}}}},
		{"port zero", FirewallSpec{GatewayPorts: []GatewayPort{{"tcp", 0}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := BuildFirewall(tt.spec)
			if !errors.Is(err, ErrInvalidFirewallSpec) {
				t.Fatalf("BuildFirewall = %v, want ErrInvalidFirewallSpec", err)
			}
		})
	}
}

func TestEgressModeText(t *testing.T) {
	tests := []struct {
		text    string
		want    EgressMode
		wantErr bool
	}{
		{text: "none", want: EgressNone},
		{text: "nat", want: EgressNAT},
		{text: "NAT", wantErr: true},
		{text: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			var m EgressMode
			err := m.UnmarshalText([]byte(tt.text))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("UnmarshalText(%q) = %v, want an error", tt.text, m)
				}
				return
			}
			if err != nil || m != tt.want {
				t.Fatalf("UnmarshalText(%q) = %v, %v; want %v", tt.text, m, err, tt.want)
			}
			back, err := m.MarshalText()
			if err != nil || string(back) != tt.text {
				t.Fatalf("MarshalText(%v) = %q, %v; want %q", m, back, err, tt.text)
			}
		})
	}
	if _, err := EgressMode(9).MarshalText(); err == nil {
		t.Error("MarshalText of an unknown mode succeeded")
	}
}
