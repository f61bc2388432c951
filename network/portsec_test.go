package network

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// lockedSpec is twoVNetSpec with port security: "dev" lets its guests talk
// to each other, "lab" (the default) does not.
func lockedSpec() FirewallSpec {
	s := twoVNetSpec()
	s.LockPorts = true
	s.GatewayPorts = []GatewayPort{{"tcp", 8123}}
	s.VNets[0].Ports = []FirewallPort{
		{Name: "lvp00000000000c", MAC: "52:54:00:00:02:0C", IP: netip.MustParseAddr("10.250.2.12")},
	}
	s.VNets[1].PeerTraffic = PeerAllow
	s.VNets[1].Ports = []FirewallPort{
		{Name: "lvp00000000000b", MAC: "52:54:00:00:01:0b", IP: netip.MustParseAddr("10.250.1.11")},
		{Name: "lvp00000000000a", MAC: "52:54:00:00:01:0a", IP: netip.MustParseAddr("10.250.1.10")},
	}
	return s
}

func TestBuildFirewallLockedPorts(t *testing.T) {
	rs, err := BuildFirewall(lockedSpec())
	if err != nil {
		t.Fatal(err)
	}
	const want = `table inet labvm {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		iifname "lvbr-dev" oifname "lvbr-dev" accept
		oifname "lvbr-dev" reject with icmpx admin-prohibited
		oifname "lvbr-lab" reject with icmpx admin-prohibited
		iifname "lvbr-dev" ip saddr 10.250.1.0/24 accept
		iifname "lvbr-dev" reject with icmpx admin-prohibited
		iifname "lvbr-lab" reject with icmpx admin-prohibited
	}

	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		iifname "lvbr-dev" ip saddr 10.250.1.0/24 ip daddr 10.250.1.1 tcp dport 8123 accept
		iifname "lvbr-dev" drop
		iifname "lvbr-lab" ip saddr 10.250.2.0/24 ip daddr 10.250.2.1 tcp dport 8123 accept
		iifname "lvbr-lab" drop
	}

	chain output {
		type filter hook output priority filter; policy accept;
		ct state established,related accept
		oifname "lvbr-dev" meta mark != 0x00004c56 meta l4proto tcp reject with tcp reset
		oifname "lvbr-dev" meta mark != 0x00004c56 reject with icmpx admin-prohibited
		oifname "lvbr-lab" meta mark != 0x00004c56 meta l4proto tcp reject with tcp reset
		oifname "lvbr-lab" meta mark != 0x00004c56 reject with icmpx admin-prohibited
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.250.1.0/24 oifname != "lvbr-dev" masquerade
	}
}
table bridge labvm {
	set ports {
		type ifname
		elements = { "lvp00000000000a",
			     "lvp00000000000b",
			     "lvp00000000000c" }
	}

	set port-mac {
		type ifname . ether_addr
		elements = { "lvp00000000000a" . 52:54:00:00:01:0a,
			     "lvp00000000000b" . 52:54:00:00:01:0b,
			     "lvp00000000000c" . 52:54:00:00:02:0c }
	}

	set port-arp {
		type ifname . ether_addr . ipv4_addr
		elements = { "lvp00000000000a" . 52:54:00:00:01:0a . 10.250.1.10,
			     "lvp00000000000b" . 52:54:00:00:01:0b . 10.250.1.11,
			     "lvp00000000000c" . 52:54:00:00:02:0c . 10.250.2.12 }
	}

	set port-ip {
		type ifname . ipv4_addr
		elements = { "lvp00000000000a" . 10.250.1.10,
			     "lvp00000000000b" . 10.250.1.11,
			     "lvp00000000000c" . 10.250.2.12 }
	}

	set isolated {
		type ifname
		elements = { "lvp00000000000c" }
	}

	set peers-dev {
		type ifname
		elements = { "lvp00000000000a",
			     "lvp00000000000b" }
	}

	chain prerouting {
		type filter hook prerouting priority filter; policy accept;
		iifname @ports jump port
		ip saddr 10.250.1.0/24 drop
		arp saddr ip 10.250.1.0/24 drop
		ip saddr 10.250.2.0/24 drop
		arp saddr ip 10.250.2.0/24 drop
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname @isolated drop
		iifname @isolated drop
		oifname @peers-dev iifname != @peers-dev drop
	}

	chain port {
		iifname . ether saddr != @port-mac drop
		arp htype 1 arp ptype ip arp hlen 6 arp plen 4 iifname . arp saddr ether . arp saddr ip @port-arp accept
		iifname . ip saddr @port-ip udp sport 67 drop
		iifname . ip saddr @port-ip icmp type redirect drop
		iifname . ip saddr @port-ip accept
		drop
	}
}
`
	if got := rs.String(); got != want {
		t.Errorf("BuildFirewall:\n%s\nwant:\n%s", got, want)
	}
}

func TestBuildFirewallLockedVariants(t *testing.T) {
	tests := []struct {
		name        string
		change      func(*FirewallSpec)
		contains    []string
		notContains []string
	}{
		{
			name:        "unlocked spec has no bridge table",
			change:      func(s *FirewallSpec) { *s = twoVNetSpec() },
			contains:    []string{`iifname "lvbr-lab" oifname "lvbr-lab" accept`},
			notContains: []string{"table bridge", "ip saddr 10.250.2.0/24 ip daddr"},
		},
		{
			name:        "locked VNet without ports still guards its addresses",
			change:      func(s *FirewallSpec) { s.VNets[0].Ports = nil },
			contains:    []string{"ip saddr 10.250.2.0/24 drop", "arp saddr ip 10.250.2.0/24 drop", "set isolated {\n\t\ttype ifname\n\t}", "chain port {"},
			notContains: []string{"lvp00000000000c"},
		},
		{
			name:        "peer allow keeps routed same-bridge traffic",
			change:      func(s *FirewallSpec) { s.VNets[0].PeerTraffic = PeerAllow },
			contains:    []string{`iifname "lvbr-lab" oifname "lvbr-lab" accept`, "oifname @peers-lab iifname != @peers-lab drop", "set peers-lab {\n\t\ttype ifname\n\t\telements = { \"lvp00000000000c\" }"},
			notContains: []string{"set isolated {\n\t\ttype ifname\n\t\telements"},
		},
		{
			name:     "peer allow VNet without ports keeps its peers set and rule",
			change:   func(s *FirewallSpec) { s.VNets[1].Ports = nil },
			contains: []string{"set peers-dev {\n\t\ttype ifname\n\t}", "oifname @peers-dev iifname != @peers-dev drop"},
		},
		{
			name:     "canonical MAC",
			change:   func(s *FirewallSpec) {},
			contains: []string{`"lvp00000000000c" . 52:54:00:00:02:0c }`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := lockedSpec()
			tt.change(&spec)
			rs, err := BuildFirewall(spec)
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

func TestBuildFirewallRejectsBadPorts(t *testing.T) {
	port := func(change func(*FirewallPort)) func(*FirewallSpec) {
		return func(s *FirewallSpec) { change(&s.VNets[1].Ports[0]) }
	}
	tests := []struct {
		name   string
		change func(*FirewallSpec)
	}{
		{"ports without LockPorts", func(s *FirewallSpec) { s.LockPorts = false }},
		{"peer allow without LockPorts", func(s *FirewallSpec) {
			s.LockPorts, s.VNets[0].Ports, s.VNets[1].Ports = false, nil, nil
		}},
		{"unknown peer traffic", func(s *FirewallSpec) { s.VNets[0].PeerTraffic = 5 }},
		{"empty port name", port(func(p *FirewallPort) { p.Name = "" })},
		{"port name too long", port(func(p *FirewallPort) { p.Name = "lvp0123456789abc" })},
		{"port name with a space", port(func(p *FirewallPort) { p.Name = "lvp 1" })},
		{"port listed twice", port(func(p *FirewallPort) { p.Name = "lvp00000000000c" })},
		{"port named like a bridge", port(func(p *FirewallPort) { p.Name = "lvbr-lab" })},
		{"bad MAC", port(func(p *FirewallPort) { p.MAC = "52:54:00:00:01" })},
		{"multicast MAC", port(func(p *FirewallPort) { p.MAC = "01:00:5e:00:00:01" })},
		{"MAC shared", port(func(p *FirewallPort) { p.MAC = "52:54:00:00:01:0a" })},
		{"address outside the subnet", port(func(p *FirewallPort) { p.IP = netip.MustParseAddr("10.250.2.11") })},
		{"no address", port(func(p *FirewallPort) { p.IP = netip.Addr{} })},
		{"gateway address", port(func(p *FirewallPort) { p.IP = netip.MustParseAddr("10.250.1.1") })},
		{"address shared", port(func(p *FirewallPort) { p.IP = netip.MustParseAddr("10.250.1.10") })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := lockedSpec()
			tt.change(&spec)
			_, err := BuildFirewall(spec)
			if !errors.Is(err, ErrInvalidFirewallSpec) {
				t.Fatalf("BuildFirewall = %v, want ErrInvalidFirewallSpec", err)
			}
			t.Log(err)
		})
	}
}

func TestBuildFirewallDoesNotReorderCallersPorts(t *testing.T) {
	spec := lockedSpec()
	first := spec.VNets[1].Ports[0].Name
	if _, err := BuildFirewall(spec); err != nil {
		t.Fatal(err)
	}
	if spec.VNets[1].Ports[0].Name != first {
		t.Fatal("BuildFirewall sorted the caller's slice")
	}
}

func TestPortName(t *testing.T) {
	hashed := func(id string) string {
		sum := sha256.Sum256([]byte(id))
		return PortNamePrefix + hex.EncodeToString(sum[:])[:12]
	}
	tests := []struct {
		name, id, want string
	}{
		{"labvm id keeps its prefix", "1234abcd5678ef90", "lvp1234abcd5678"},
		{"exactly 12 hex characters", "0123456789ab", "lvp0123456789ab"},
		{"upper-case hex is hashed", "1234ABCD5678EF90", hashed("1234ABCD5678EF90")},
		{"short id is hashed", "1234abcd", hashed("1234abcd")},
		{"anything else is hashed", `a<b&"c`, hashed(`a<b&"c`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PortName(tt.id)
			if got != tt.want || len(got) != 15 {
				t.Errorf("PortName(%q) = %q, want %q (15 characters)", tt.id, got, tt.want)
			}
			if err := ValidatePortName(got); err != nil {
				t.Errorf("PortName(%q) = %q: %v", tt.id, got, err)
			}
			for _, reserved := range []string{"vnet", "vif", "macvtap", "macvlan"} {
				if strings.HasPrefix(got, reserved) {
					t.Errorf("PortName(%q) = %q uses libvirt's reserved prefix %s", tt.id, got, reserved)
				}
			}
		})
	}
}

func TestPeerTrafficText(t *testing.T) {
	for _, tt := range []struct {
		text    string
		want    PeerTraffic
		wantErr bool
	}{
		{text: "deny", want: PeerDeny},
		{text: "allow", want: PeerAllow},
		{text: "Allow", wantErr: true},
		{text: "", wantErr: true},
	} {
		var p PeerTraffic
		err := p.UnmarshalText([]byte(tt.text))
		if (err != nil) != tt.wantErr || err == nil && p != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v (error %v)", tt.text, p, err, tt.want, tt.wantErr)
			continue
		}
		if err == nil {
			if back, _ := p.MarshalText(); string(back) != tt.text {
				t.Errorf("MarshalText(%v) = %q, want %q", p, back, tt.text)
			}
		}
	}
	if _, err := PeerTraffic(3).MarshalText(); err == nil {
		t.Error("MarshalText of an unknown value succeeded")
	}
}
