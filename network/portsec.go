package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Layer 2 port security. Every guest is hostile: root inside can put any
// MAC or IP on its NIC, answer ARP for a neighbour's address, run a DHCP
// server or send IPv6 router advertisements. The inet table judges IP
// packets once they reach the host's IP stack, which is too late for
// frames that change the host's neighbour table or go straight from one
// guest to another across the bridge. This file builds the bridge-family
// half of the firewall, from the same FirewallSpec, applied in the same
// transaction.
//
// The kernel's bridge meta expressions (`meta ibrname`, nft_meta_bridge)
// are not built into every kernel labvm runs on, so no rule asks "which
// bridge is this frame on". Every rule keys on what the spec knows
// instead: our ports by name and our subnets by address. An unknown port
// on a VNet bridge (a stale tap, a domain started without a port name)
// therefore gets nothing bridged to a guest port, cannot send with a VNet
// address, and, with the inet table's input rules, reaches nothing of the
// host; ports of other bridges (Docker's, libvirt's own) are untouched.

// PortNamePrefix starts every port name PortName makes. libvirt reserves
// "vnet", "vif", "macvtap" and "macvlan" for names it picks itself.
const PortNamePrefix = "lvp"

// PortName is the host-side device (tap) name of an instance's NIC: the
// domain XML asks libvirt for it, and the firewall's port rules match it,
// so both are known before the domain starts and stay the same across
// stop and start. It is PortNamePrefix and the first 12 characters of the
// instance id (labvm ids are random hex, so `ip link` and `labvm show`
// match at a glance), or of its SHA-256 for ids that are not hex: always
// 15 characters, the kernel's limit.
func PortName(instanceID string) string {
	const n = 15 - len(PortNamePrefix)
	id := instanceID
	if len(id) < n || strings.Trim(id, "0123456789abcdef") != "" {
		sum := sha256.Sum256([]byte(instanceID))
		id = hex.EncodeToString(sum[:])
	}
	return PortNamePrefix + id[:n]
}

// ValidatePortName checks a port (tap) name the firewall can match and
// name a chain after: 1-15 letters, digits, '-', '_' or '.'.
func ValidatePortName(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("port name %q: must be 1-15 characters", name)
	}
	for _, c := range name {
		ok := c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !ok {
			return fmt.Errorf("port name %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}

// PeerTraffic says whether guests of one VNet may reach each other.
type PeerTraffic int

const (
	// PeerDeny lets a VNet's guests reach only the host (gateway) and be
	// reached only by it (the daemon's tunnels).
	PeerDeny PeerTraffic = iota
	// PeerAllow additionally lets them talk to each other directly.
	PeerAllow
)

// String returns the configuration spelling of p.
func (p PeerTraffic) String() string {
	switch p {
	case PeerDeny:
		return "deny"
	case PeerAllow:
		return "allow"
	}
	return fmt.Sprintf("PeerTraffic(%d)", int(p))
}

// MarshalText implements encoding.TextMarshaler.
func (p PeerTraffic) MarshalText() ([]byte, error) {
	if p != PeerDeny && p != PeerAllow {
		return nil, fmt.Errorf("marshal peer traffic: unknown value %d", int(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *PeerTraffic) UnmarshalText(text []byte) error {
	parsed, err := ParsePeerTraffic(string(text))
	if err != nil {
		return err
	}
	*p = parsed
	return nil
}

// ParsePeerTraffic parses "deny" or "allow".
func ParsePeerTraffic(s string) (PeerTraffic, error) {
	switch s {
	case "deny":
		return PeerDeny, nil
	case "allow":
		return PeerAllow, nil
	}
	return PeerDeny, fmt.Errorf("peer traffic %q: want \"deny\" or \"allow\"", s)
}

// FirewallPort is one instance's NIC as the firewall sees it.
type FirewallPort struct {
	// Name is the host-side device, PortName(instance id).
	Name string
	// MAC is the guest NIC's address, e.g. "52:54:00:12:34:56".
	MAC string
	// IP is the guest's IPv4 address, inside its VNet's subnet.
	IP netip.Addr
}

// normalizePorts validates the ports of vnets (already validated
// themselves) and replaces each VNet's Ports by a sorted copy with MACs
// in canonical form.
func normalizePorts(lock bool, vnets []FirewallVNet) error {
	names := map[string]string{} // port name -> VNet
	macs := map[string]string{}  // MAC -> port name
	for i := range vnets {
		v := &vnets[i]
		if !lock {
			if len(v.Ports) > 0 || v.PeerTraffic != PeerDeny {
				return fmt.Errorf("%w: VNet %q: ports and peer traffic need LockPorts", ErrInvalidFirewallSpec, v.Name)
			}
			continue
		}
		if v.PeerTraffic != PeerDeny && v.PeerTraffic != PeerAllow {
			return fmt.Errorf("%w: VNet %q: unknown peer traffic %d", ErrInvalidFirewallSpec, v.Name, int(v.PeerTraffic))
		}
		// The chain of peers is named after the VNet.
		if err := validateTableName(v.Name); err != nil {
			return fmt.Errorf("%w: VNet %q: name unusable as a chain name", ErrInvalidFirewallSpec, v.Name)
		}
		gateways := v.Gateways
		if len(gateways) == 0 {
			gateways = []netip.Addr{Gateway(v.Subnet)}
		}
		ips := map[netip.Addr]string{}
		ports := make([]FirewallPort, 0, len(v.Ports))
		for _, p := range v.Ports {
			bad := func(format string, args ...any) error {
				return fmt.Errorf("%w: VNet %q port %q: %s", ErrInvalidFirewallSpec, v.Name, p.Name, fmt.Sprintf(format, args...))
			}
			if err := ValidatePortName(p.Name); err != nil {
				return fmt.Errorf("%w: VNet %q: %w", ErrInvalidFirewallSpec, v.Name, err)
			}
			if other, ok := names[p.Name]; ok {
				return bad("listed twice (also in VNet %q)", other)
			}
			for _, o := range vnets {
				if o.Bridge == p.Name {
					return bad("is the bridge of VNet %q", o.Name)
				}
			}
			hw, err := net.ParseMAC(p.MAC)
			switch {
			case err != nil || len(hw) != 6:
				return bad("MAC %q: want a 6-byte address like 52:54:00:12:34:56", p.MAC)
			case hw[0]&1 != 0:
				return bad("MAC %s is a multicast address", hw)
			case macs[hw.String()] != "":
				return bad("MAC %s is also port %q's", hw, macs[hw.String()])
			}
			switch {
			case !p.IP.Is4() || !v.Subnet.Contains(p.IP):
				return bad("address %v is not an IPv4 address in %s", p.IP, v.Subnet)
			case slices.Contains(gateways, p.IP):
				return bad("address %s is a gateway", p.IP)
			case ips[p.IP] != "":
				return bad("address %s is also port %q's", p.IP, ips[p.IP])
			}
			names[p.Name], macs[hw.String()], ips[p.IP] = v.Name, p.Name, p.Name
			ports = append(ports, FirewallPort{Name: p.Name, MAC: hw.String(), IP: p.IP})
		}
		slices.SortFunc(ports, func(a, b FirewallPort) int { return strings.Compare(a.Name, b.Name) })
		v.Ports = ports
	}
	return nil
}

// The bridge table's sets. Every rule that asks "which port is this, and
// is this its guest's MAC or address" looks the frame up in one of them,
// so a frame costs the same however many guests there are, and a port
// comes and goes as a few elements (PortChange), never as a change to a
// rule or a chain. Sets without verdicts matter too: a verdict map
// jumping to a chain per port would make the kernel re-check every
// port's chain for loops at each commit, so adding one port would again
// cost in proportion to all of them.
const (
	// portsSet holds the known ports, whose frames go through portChain.
	portsSet = "ports"
	// portMACSet holds each port with its guest's MAC.
	portMACSet = "port-mac"
	// portARPSet holds each port with its guest's MAC and address, the
	// only ARP sender fields it may use.
	portARPSet = "port-arp"
	// portIPSet holds each port with its guest's address.
	portIPSet = "port-ip"
	// isolatedSet holds the ports of PeerDeny VNets, to and from which
	// nothing is bridged.
	isolatedSet = "isolated"

	// portChain is what every known port's frames go through.
	portChain = "port"
)

// peersSet names the set of a PeerAllow VNet's ports.
func peersSet(vnet string) string { return "peers-" + vnet }

// buildBridge returns the sets and chains of the bridge table for a
// normalized spec with LockPorts.
//
// prerouting sees every frame a bridge port sends, before the bridge
// forwards it or hands it to the host. A known port's frames go through
// the port chain, which accepts exactly what the guest may send and
// drops the rest. Frames of any other port that carry a VNet address
// (IPv4 source or ARP sender) are dropped: only their owners may use
// them.
//
// forward sees frames bridged from one port to another (never those from
// or to the host). Into a guest of a PeerDeny VNet nothing passes, and
// nothing out of it (@isolated); into a guest of a PeerAllow VNet only
// frames from that VNet's ports (its peers set).
//
// The ports are added last, each exactly as AddPort adds it to a table
// applied without them, so a full apply and a sequence of adds give the
// same table.
func buildBridge(s FirewallSpec) Ruleset {
	rs := Ruleset{BridgeSets: []Set{
		{Name: portsSet, Key: KeyPort},
		{Name: portMACSet, Key: KeyPortMAC},
		{Name: portARPSet, Key: KeyPortMACIP},
		{Name: portIPSet, Key: KeyPortIP},
		{Name: isolatedSet, Key: KeyPort},
	}}
	prerouting := Chain{Name: "prerouting", Type: "filter", Hook: "prerouting", Priority: PriorityBridgeFilter,
		Rules: []Rule{{Match: []Match{IfaceSetMatch{Set: portsSet}}, Verdict: Jump, Target: portChain}}}
	for _, v := range s.VNets {
		prerouting.Rules = append(prerouting.Rules,
			Rule{Match: []Match{SrcAddr(v.Subnet)}, Verdict: Drop},
			Rule{Match: []Match{ArpSenderMatch{Prefix: v.Subnet}}, Verdict: Drop},
		)
	}
	forward := Chain{Name: "forward", Type: "filter", Hook: "forward", Priority: PriorityBridgeFilter, Rules: []Rule{
		{Match: []Match{IfaceSetMatch{Out: true, Set: isolatedSet}}, Verdict: Drop},
		{Match: []Match{IfaceSetMatch{Set: isolatedSet}}, Verdict: Drop},
	}}
	for _, v := range s.VNets {
		if v.PeerTraffic != PeerAllow {
			continue
		}
		// There even while the VNet has no ports, so adding its first
		// port is no different from adding any other.
		rs.BridgeSets = append(rs.BridgeSets, Set{Name: peersSet(v.Name), Key: KeyPort})
		forward.Rules = append(forward.Rules, Rule{Match: []Match{
			IfaceSetMatch{Out: true, Set: peersSet(v.Name)}, IfaceSetMatch{Not: true, Set: peersSet(v.Name)},
		}, Verdict: Drop})
	}
	rs.Bridge = []Chain{prerouting, forward, portRules()}
	for _, v := range s.VNets {
		for _, p := range v.Ports {
			rs.addPort(portChange(s.TableName, v, p))
		}
	}
	return rs
}

// PortChange is what one port adds to the bridge table, or what removing
// it takes away: one element in each of a few sets. It touches nothing of
// any other port.
type PortChange struct {
	Table    string
	Elements []PortElement
}

// PortElement is the element a port has in one set.
type PortElement struct {
	Set string
	Key SetKey
	SetElement
}

// String renders c as the nft commands that add it, in order.
func (c PortChange) String() string {
	var b strings.Builder
	for _, e := range c.Elements {
		fmt.Fprintf(&b, "add element bridge %s %s { %s }\n", c.Table, e.Set, e.render(e.Key))
	}
	return b.String()
}

// BuildPortChange returns what adding port to vnet (or removing it)
// changes in the bridge table of a firewall applied with LockPorts under
// table (default DefaultFirewallTable). vnet's own Ports are not read. It
// checks what can be checked of one port alone; that no other port has
// the same name, MAC or address is the caller's to know.
func BuildPortChange(table string, vnet FirewallVNet, port FirewallPort) (PortChange, error) {
	vnet.Ports = []FirewallPort{port}
	s, err := FirewallSpec{TableName: table, LockPorts: true, VNets: []FirewallVNet{vnet}}.normalized()
	if err != nil {
		return PortChange{}, err
	}
	return portChange(s.TableName, s.VNets[0], s.VNets[0].Ports[0]), nil
}

// portChange is p's elements: it is a known port, with its MAC and
// address, and what may be bridged to and from it.
func portChange(table string, v FirewallVNet, p FirewallPort) PortChange {
	hw, _ := net.ParseMAC(p.MAC) // checked by normalizePorts
	elem := SetElement{Port: p.Name, MAC: hw, IP: p.IP}
	c := PortChange{Table: table, Elements: []PortElement{
		{Set: portsSet, Key: KeyPort, SetElement: elem},
		{Set: portMACSet, Key: KeyPortMAC, SetElement: elem},
		{Set: portARPSet, Key: KeyPortMACIP, SetElement: elem},
		{Set: portIPSet, Key: KeyPortIP, SetElement: elem},
	}}
	peers := isolatedSet
	if v.PeerTraffic == PeerAllow {
		peers = peersSet(v.Name)
	}
	c.Elements = append(c.Elements, PortElement{Set: peers, Key: KeyPort, SetElement: elem})
	return c
}

// addPort adds c's elements to rs, as the kernel does.
func (rs *Ruleset) addPort(c PortChange) {
	for _, e := range c.Elements {
		i := slices.IndexFunc(rs.BridgeSets, func(s Set) bool { return s.Name == e.Set })
		rs.BridgeSets[i].Elements = append(rs.BridgeSets[i].Elements, e.SetElement)
	}
}

// portRules is what a guest may send, the rules of the port chain: frames
// from its own MAC, ARP about its own MAC and address, IPv4 from its own
// address, and nothing else, so no IPv6 (guests are IPv4-only), no VLAN
// tags, no other ethertypes. Of its IPv4, the two ways to become someone's
// router are dropped too: DHCP server answers (UDP source port 67) and
// ICMP redirects. Forwarding others' traffic needs their source address,
// which the address check already refuses.
func portRules() Chain {
	ownIP := PortSetMatch{Key: KeyPortIP, Set: portIPSet}
	return Chain{Name: portChain, Rules: []Rule{
		{Match: []Match{PortSetMatch{Key: KeyPortMAC, Not: true, Set: portMACSet}}, Verdict: Drop},
		{Match: []Match{PortSetMatch{Key: KeyPortMACIP, Set: portARPSet}}, Verdict: Accept},
		{Match: []Match{ownIP, SrcPort("udp", 67)}, Verdict: Drop},
		{Match: []Match{ownIP, ICMPTypeMatch{Type: ICMPRedirect}}, Verdict: Drop},
		{Match: []Match{ownIP}, Verdict: Accept},
		{Verdict: Drop},
	}}
}
