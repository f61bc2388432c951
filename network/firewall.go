package network

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Firewall isolation of the VNets lives in one nftables table owned by
// labvm. This file is the pure half: it validates a FirewallSpec and turns
// it into a Ruleset, a plain description that renders in the same nft
// syntax `nft list table` prints, so the policy can be reviewed and tested
// without a kernel. firewall_apply.go realises a Ruleset with netlink.

// DaemonMark is the SO_MARK the daemon puts on its own sockets to guests.
// Setting SO_MARK needs CAP_NET_ADMIN, so unprivileged users on the host
// cannot forge it; that is what lets the output chain tell the daemon's
// tunnels apart from everyone else's connections. "LV" in ASCII.
const DaemonMark uint32 = 0x4c56

// DefaultFirewallTable is the name of labvm's table in the inet family.
const DefaultFirewallTable = "labvm"

// ErrInvalidFirewallSpec marks every validation failure of a FirewallSpec,
// so callers can tell configuration mistakes from kernel errors.
var ErrInvalidFirewallSpec = errors.New("invalid firewall spec")

// EgressMode says where a VNet's guests may open connections to.
type EgressMode int

const (
	// EgressNone lets guests reach only the allowed ports of their gateway.
	EgressNone EgressMode = iota
	// EgressNAT additionally lets guests reach anything outside the VNets,
	// masqueraded behind the host's address on the outgoing interface.
	EgressNAT
)

// String returns the configuration spelling of m.
func (m EgressMode) String() string {
	switch m {
	case EgressNone:
		return "none"
	case EgressNAT:
		return "nat"
	}
	return fmt.Sprintf("EgressMode(%d)", int(m))
}

// MarshalText implements encoding.TextMarshaler for config files.
func (m EgressMode) MarshalText() ([]byte, error) {
	if m != EgressNone && m != EgressNAT {
		return nil, fmt.Errorf("marshal egress mode: unknown value %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler for config files.
func (m *EgressMode) UnmarshalText(text []byte) error {
	parsed, err := ParseEgress(string(text))
	if err != nil {
		return err
	}
	*m = parsed
	return nil
}

// ParseEgress parses "none" or "nat".
func ParseEgress(s string) (EgressMode, error) {
	switch s {
	case "none":
		return EgressNone, nil
	case "nat":
		return EgressNAT, nil
	}
	return EgressNone, fmt.Errorf("egress mode %q: want \"none\" or \"nat\"", s)
}

// GatewayPort is a service on the host that guests may open connections to
// via their gateway address, e.g. DNS or the daemon's phone-home server.
type GatewayPort struct {
	Proto string // "tcp" or "udp"
	Port  uint16
}

func (p GatewayPort) String() string { return fmt.Sprintf("%s/%d", p.Proto, p.Port) }

// isDHCP reports whether p is the DHCP server port. DHCP needs special
// rules: requests are broadcast from 0.0.0.0, so they can't be matched on
// the gateway address, and the server's answers are not conntrack replies.
func (p GatewayPort) isDHCP() bool { return p.Proto == "udp" && p.Port == 67 }

// FirewallVNet is one VNet as the firewall sees it.
type FirewallVNet struct {
	Name   string
	Bridge string
	// Subnet covers every address of the VNet (its CIDR).
	Subnet netip.Prefix
	Egress EgressMode
	// Gateways are the host's addresses guests may reach on the bridge,
	// one per subnet of the VNet; empty means Gateway(Subnet).
	Gateways []netip.Addr

	// PeerTraffic says whether the VNet's guests may reach each other
	// directly. Only used with FirewallSpec.LockPorts; the zero value,
	// PeerDeny, isolates them.
	PeerTraffic PeerTraffic
	// Ports are the instances plugged into the bridge; only used (and
	// only allowed) with FirewallSpec.LockPorts.
	Ports []FirewallPort
}

// FirewallSpec is the complete desired state of labvm's firewall. Applying
// it replaces whatever an earlier spec installed, so VNets left out of it
// lose their rules.
type FirewallSpec struct {
	TableName    string // default DefaultFirewallTable
	VNets        []FirewallVNet
	GatewayPorts []GatewayPort
	DaemonMark   uint32 // default DaemonMark

	// LockPorts turns on layer 2 port security (see buildBridge): each
	// VNet's Ports may only send as themselves, nothing reaches a guest
	// port unless from a peer its VNet allows, and addresses of the VNets
	// are only accepted from their owners' ports. It is applied in the
	// same transaction, as a bridge-family table named TableName. Off
	// (the zero value), no bridge table exists and PeerTraffic and Ports
	// must be empty: the firewall of before port security.
	LockPorts bool
}

// normalized validates s and returns a copy with defaults filled in and
// VNets and ports sorted, so the same spec in any order builds the same
// ruleset and re-applying it is a no-op.
func (s FirewallSpec) normalized() (FirewallSpec, error) {
	out := FirewallSpec{TableName: s.TableName, DaemonMark: s.DaemonMark}
	if out.TableName == "" {
		out.TableName = DefaultFirewallTable
	}
	if out.DaemonMark == 0 {
		out.DaemonMark = DaemonMark
	}
	if err := validateTableName(out.TableName); err != nil {
		return FirewallSpec{}, err
	}

	names := map[string]bool{}
	bridges := map[string]bool{}
	for _, v := range s.VNets {
		if v.Name == "" {
			return FirewallSpec{}, fmt.Errorf("%w: VNet on bridge %q has no name", ErrInvalidFirewallSpec, v.Bridge)
		}
		if names[v.Name] {
			return FirewallSpec{}, fmt.Errorf("%w: VNet %q listed twice", ErrInvalidFirewallSpec, v.Name)
		}
		if err := ValidateBridgeName(v.Bridge); err != nil {
			return FirewallSpec{}, fmt.Errorf("%w: VNet %q: %w", ErrInvalidFirewallSpec, v.Name, err)
		}
		if bridges[v.Bridge] {
			return FirewallSpec{}, fmt.Errorf("%w: VNet %q: bridge %s is used by another VNet", ErrInvalidFirewallSpec, v.Name, v.Bridge)
		}
		if err := ValidateSubnet(v.Subnet); err != nil {
			return FirewallSpec{}, fmt.Errorf("%w: VNet %q: %w", ErrInvalidFirewallSpec, v.Name, err)
		}
		if v.Egress != EgressNone && v.Egress != EgressNAT {
			return FirewallSpec{}, fmt.Errorf("%w: VNet %q: unknown egress mode %d", ErrInvalidFirewallSpec, v.Name, int(v.Egress))
		}
		for _, o := range out.VNets {
			if o.Subnet.Overlaps(v.Subnet) {
				return FirewallSpec{}, fmt.Errorf("%w: VNets %q and %q have overlapping subnets %s and %s", ErrInvalidFirewallSpec, o.Name, v.Name, o.Subnet, v.Subnet)
			}
		}
		names[v.Name], bridges[v.Bridge] = true, true
		out.VNets = append(out.VNets, v)
	}
	if err := normalizePorts(s.LockPorts, out.VNets); err != nil {
		return FirewallSpec{}, err
	}
	out.LockPorts = s.LockPorts
	slices.SortFunc(out.VNets, func(a, b FirewallVNet) int { return strings.Compare(a.Name, b.Name) })

	for _, p := range s.GatewayPorts {
		if p.Proto != "tcp" && p.Proto != "udp" {
			return FirewallSpec{}, fmt.Errorf("%w: gateway port %s: protocol must be tcp or udp", ErrInvalidFirewallSpec, p)
		}
		if p.Port == 0 {
			return FirewallSpec{}, fmt.Errorf("%w: gateway port %s: port 0", ErrInvalidFirewallSpec, p)
		}
		if !slices.Contains(out.GatewayPorts, p) {
			out.GatewayPorts = append(out.GatewayPorts, p)
		}
	}
	slices.SortFunc(out.GatewayPorts, func(a, b GatewayPort) int {
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return out, nil
}

func validateTableName(name string) error {
	if len(name) > 64 {
		return fmt.Errorf("%w: table name %q: longer than 64 characters", ErrInvalidFirewallSpec, name)
	}
	for _, c := range name {
		ok := c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !ok {
			return fmt.Errorf("%w: table name %q: only letters, digits, '-' and '_' are allowed", ErrInvalidFirewallSpec, name)
		}
	}
	return nil
}

// foreignComment is the marker on the rules labvm adds to other programs'
// tables (see Ruleset.ForeignForward). It names our table so that tests
// and several daemons using different tables never remove each other's.
func foreignComment(table string) string { return "labvm:" + table }

// BuildFirewall turns spec into the ruleset to install. It is pure and
// deterministic. All base chains have policy accept: the table only judges
// traffic that touches a VNet, and the host's other traffic is none of its
// business (nor is it ours to allow: other tables still see it).
func BuildFirewall(spec FirewallSpec) (Ruleset, error) {
	s, err := spec.normalized()
	if err != nil {
		return Ruleset{}, err
	}
	established := Rule{Match: []Match{CtEstablishedRelated{}}, Verdict: Accept}
	forward := Chain{Name: "forward", Type: "filter", Hook: "forward", Priority: PriorityFilter, Rules: []Rule{established}}
	input := Chain{Name: "input", Type: "filter", Hook: "input", Priority: PriorityFilter, Rules: []Rule{established}}
	output := Chain{Name: "output", Type: "filter", Hook: "output", Priority: PriorityFilter, Rules: []Rule{established}}
	postrouting := Chain{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: PrioritySrcNAT}
	var foreign []Rule

	// Forward. Order matters across VNets: every "into this bridge" reject
	// comes before any "out of that bridge" accept, so an egress=nat VNet
	// can reach the internet but never another VNet.
	for _, v := range s.VNets {
		// Guests on one bridge talk at layer 2; this matters when
		// br_netfilter hands bridged frames to the IP forward hook, and
		// for a guest that sends a peer's packets to the gateway's MAC
		// to have the host route them back into the bridge. With locked
		// ports, a VNet that denies peer traffic gets the reject below
		// for both.
		if s.LockPorts && v.PeerTraffic == PeerDeny {
			continue
		}
		forward.Rules = append(forward.Rules, Rule{Match: []Match{InIface(v.Bridge), OutIface(v.Bridge)}, Verdict: Accept})
	}
	for _, v := range s.VNets {
		// Nothing opens a connection into a VNet: not the outside, not
		// another VNet. Reject so guests fail fast instead of timing out.
		forward.Rules = append(forward.Rules, Rule{Match: []Match{OutIface(v.Bridge)}, Verdict: RejectAdmin})
	}
	for _, v := range s.VNets {
		if v.Egress == EgressNAT {
			// Matching the source subnet keeps a guest from sending
			// spoofed addresses out through our masquerade.
			forward.Rules = append(forward.Rules, Rule{Match: []Match{InIface(v.Bridge), SrcAddr(v.Subnet)}, Verdict: Accept})
			postrouting.Rules = append(postrouting.Rules, Rule{Match: []Match{SrcAddr(v.Subnet), NotOutIface(v.Bridge)}, Verdict: Masquerade})
		}
		forward.Rules = append(forward.Rules, Rule{Match: []Match{InIface(v.Bridge)}, Verdict: RejectAdmin})
	}

	gatewayDHCP := slices.ContainsFunc(s.GatewayPorts, GatewayPort.isDHCP)
	for _, v := range s.VNets {
		gateways := v.Gateways
		if len(gateways) == 0 {
			gateways = []netip.Addr{Gateway(v.Subnet)}
		}
		for _, p := range s.GatewayPorts {
			if p.isDHCP() {
				input.Rules = append(input.Rules, Rule{Match: []Match{InIface(v.Bridge), DstPort(p.Proto, p.Port)}, Verdict: Accept})
				continue
			}
			for _, g := range gateways {
				m := []Match{InIface(v.Bridge), DstAddr(netip.PrefixFrom(g, 32)), DstPort(p.Proto, p.Port)}
				if s.LockPorts {
					// The bridge table only vouches for VNet sources:
					// a port it does not know may use any other.
					m = slices.Insert(m, 1, Match(SrcAddr(v.Subnet)))
				}
				input.Rules = append(input.Rules, Rule{Match: m, Verdict: Accept})
			}
		}
		// Guests get the listed services and nothing else of the host.
		input.Rules = append(input.Rules, Rule{Match: []Match{InIface(v.Bridge)}, Verdict: Drop})

		// Matching the bridge rather than the subnet also covers IPv6
		// link-local and broadcast addresses a local user could try.
		if gatewayDHCP {
			output.Rules = append(output.Rules, Rule{Match: []Match{OutIface(v.Bridge), SrcPort("udp", 67), DstPort("udp", 68)}, Verdict: Accept})
		}
		notDaemon := MarkMatch{Not: true, Mark: s.DaemonMark}
		output.Rules = append(output.Rules,
			Rule{Match: []Match{OutIface(v.Bridge), notDaemon, ProtoMatch{Proto: "tcp"}}, Verdict: RejectTCPReset},
			Rule{Match: []Match{OutIface(v.Bridge), notDaemon}, Verdict: RejectAdmin},
		)

		// A DROP policy in iptables' FORWARD (Docker sets one) would veto
		// our accepts; these rules lift that veto for our bridges only,
		// and only for replies into them, so they open nothing by
		// themselves.
		comment := foreignComment(s.TableName)
		foreign = append(foreign,
			Rule{Match: []Match{InIface(v.Bridge)}, Verdict: Accept, Comment: comment},
			Rule{Match: []Match{OutIface(v.Bridge), CtEstablishedRelated{}}, Verdict: Accept, Comment: comment},
		)
	}

	rs := Ruleset{
		Table:          s.TableName,
		Chains:         []Chain{forward, input, output, postrouting},
		ForeignForward: foreign,
	}
	if s.LockPorts {
		b := buildBridge(s)
		rs.Bridge, rs.BridgeSets = b.Bridge, b.BridgeSets
	}
	return rs, nil
}
