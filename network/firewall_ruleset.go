package network

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// The types below describe a ruleset just richly enough for labvm's
// policy. They are deliberately tiny: each one renders exactly as nft
// lists the equivalent kernel expressions, so a Ruleset's String() can be
// compared byte for byte with `nft list table`.

// Ruleset is what BuildFirewall produces.
type Ruleset struct {
	Table  string  // in the inet family
	Chains []Chain // base chains, in listing order

	// Bridge are the chains of the table of the same name in the bridge
	// family (layer 2 port security, see buildBridge); nil when the spec
	// does not lock ports, and then that table does not exist.
	Bridge []Chain
	// BridgeSets are the named sets of that table, which its rules look
	// ports up in.
	BridgeSets []Set

	// ForeignForward are accept rules to keep at the top of iptables'
	// filter FORWARD chain (DOCKER-USER when it exists), if the host has
	// one. They carry Comment so they can be found and removed again.
	ForeignForward []Rule
}

// Chain priorities labvm uses, named as nft names them.
const (
	PriorityFilter int32 = 0
	PrioritySrcNAT int32 = 100
	// PriorityBridgeFilter is "filter" in the bridge family.
	PriorityBridgeFilter int32 = -200
)

// Chain is a base chain, whose policy is always accept (see
// BuildFirewall), or, with an empty Hook, a regular chain that rules jump
// to.
type Chain struct {
	Name     string
	Type     string // "filter" or "nat"; empty for a regular chain
	Hook     string // "prerouting", "forward", "input", "output" or "postrouting"
	Priority int32
	Rules    []Rule
}

// Rule matches packets when all of Match match, then applies Verdict.
type Rule struct {
	Match   []Match
	Verdict Verdict
	// Target is the chain a Jump verdict goes to.
	Target  string
	Comment string
}

// Set is a named set in the bridge table: of ports (interface names), or
// of ports with their MAC and/or address. Rules look a frame up in it with
// one hash lookup, however many ports there are, and a port comes and goes
// as elements, without a change to any rule or chain.
type Set struct {
	Name     string
	Key      SetKey
	Elements []SetElement
}

// SetKey is what a Set's elements are made of.
type SetKey int

const (
	// KeyPort is a port's name: type ifname.
	KeyPort SetKey = iota
	// KeyPortMAC is a port and its guest's MAC: ifname . ether_addr.
	KeyPortMAC
	// KeyPortMACIP adds the guest's address: ifname . ether_addr . ipv4_addr.
	KeyPortMACIP
	// KeyPortIP is a port and its guest's address: ifname . ipv4_addr.
	KeyPortIP
)

func (k SetKey) hasMAC() bool { return k == KeyPortMAC || k == KeyPortMACIP }
func (k SetKey) hasIP() bool  { return k == KeyPortIP || k == KeyPortMACIP }

// String is the key's type as nft lists it.
func (k SetKey) String() string {
	t := "ifname"
	if k.hasMAC() {
		t += " . ether_addr"
	}
	if k.hasIP() {
		t += " . ipv4_addr"
	}
	return t
}

// SetElement is one element of a Set: a port, with what its Key has.
type SetElement struct {
	Port string
	MAC  net.HardwareAddr
	IP   netip.Addr
}

// render writes e as nft lists an element of a set keyed by k.
func (e SetElement) render(k SetKey) string {
	out := fmt.Sprintf("%q", e.Port)
	if k.hasMAC() {
		out += " . " + e.MAC.String()
	}
	if k.hasIP() {
		out += " . " + e.IP.String()
	}
	return out
}

// bytes is e's key as nft compares it when sorting a listing: each field
// at its size (the name zero-padded to IFNAMSIZ), one after another.
func (e SetElement) bytes(k SetKey) []byte {
	b := ifname(e.Port)
	if k.hasMAC() {
		b = append(b, e.MAC...)
	}
	if k.hasIP() {
		a := e.IP.As4()
		b = append(b, a[:]...)
	}
	return b
}

// Match is one condition of a rule. The set of implementations is closed
// because firewall_apply.go must know how to compile each one.
type Match interface {
	fmt.Stringer
	isMatch()
}

// IfaceMatch compares the input or output interface name.
type IfaceMatch struct {
	Out  bool
	Not  bool
	Name string
}

// InIface matches packets that arrived on name.
func InIface(name string) IfaceMatch { return IfaceMatch{Name: name} }

// OutIface matches packets that leave through name.
func OutIface(name string) IfaceMatch { return IfaceMatch{Out: true, Name: name} }

// NotOutIface matches packets that leave through any interface but name.
func NotOutIface(name string) IfaceMatch { return IfaceMatch{Out: true, Not: true, Name: name} }

func (m IfaceMatch) String() string { return fmt.Sprintf("%s %s%q", m.key(), neg(m.Not), m.Name) }

func (m IfaceMatch) key() string {
	if m.Out {
		return "oifname"
	}
	return "iifname"
}

// AddrMatch matches an IPv4 source or destination prefix.
type AddrMatch struct {
	Dst    bool
	Prefix netip.Prefix
}

// SrcAddr matches IPv4 packets from p.
func SrcAddr(p netip.Prefix) AddrMatch { return AddrMatch{Prefix: p} }

// DstAddr matches IPv4 packets to p.
func DstAddr(p netip.Prefix) AddrMatch { return AddrMatch{Dst: true, Prefix: p} }

func (m AddrMatch) String() string {
	key := "saddr"
	if m.Dst {
		key = "daddr"
	}
	if m.Prefix.IsSingleIP() {
		return fmt.Sprintf("ip %s %s", key, m.Prefix.Addr())
	}
	return fmt.Sprintf("ip %s %s", key, m.Prefix)
}

// PortMatch matches a TCP or UDP source or destination port.
type PortMatch struct {
	Proto string // "tcp" or "udp"
	Dst   bool
	Port  uint16
}

// SrcPort matches packets of proto from port.
func SrcPort(proto string, port uint16) PortMatch { return PortMatch{Proto: proto, Port: port} }

// DstPort matches packets of proto to port.
func DstPort(proto string, port uint16) PortMatch {
	return PortMatch{Proto: proto, Dst: true, Port: port}
}

func (m PortMatch) String() string {
	key := "sport"
	if m.Dst {
		key = "dport"
	}
	return fmt.Sprintf("%s %s %d", m.Proto, key, m.Port)
}

// IfaceSetMatch matches frames whose input (or output) port is (or with
// Not, is not) in the named Set, of type KeyPort.
type IfaceSetMatch struct {
	Out bool
	Not bool
	Set string
}

func (m IfaceSetMatch) String() string {
	return fmt.Sprintf("%s %s@%s", IfaceMatch{Out: m.Out}.key(), neg(m.Not), m.Set)
}

// PortSetMatch matches frames whose input port and what they carry as
// their sender are (or with Not, are not) an element of the named Set,
// by its Key (bridge family):
//
//   - KeyPortMAC: the Ethernet source address;
//   - KeyPortMACIP: the sender MAC and IPv4 address of an Ethernet/IPv4
//     ARP packet (htype 1, ptype ip, hlen 6, plen 4, which the match
//     checks too: elsewhere the sender fields are not where it reads them);
//   - KeyPortIP: the IPv4 source address.
//
// Each port has one element in each such set, so this compares a frame
// with its own port's MAC or address, whichever port that is.
type PortSetMatch struct {
	Key SetKey
	Not bool
	Set string
}

func (m PortSetMatch) String() string {
	switch m.Key {
	case KeyPortMAC:
		return fmt.Sprintf("iifname . ether saddr %s@%s", neg(m.Not), m.Set)
	case KeyPortMACIP:
		return fmt.Sprintf("arp htype 1 arp ptype ip arp hlen 6 arp plen 4 iifname . arp saddr ether . arp saddr ip %s@%s", neg(m.Not), m.Set)
	case KeyPortIP:
		return fmt.Sprintf("iifname . ip saddr %s@%s", neg(m.Not), m.Set)
	}
	return fmt.Sprintf("PortSetMatch(%d)", int(m.Key))
}

// ProtoMatch matches the layer 4 protocol ("tcp" or "udp").
type ProtoMatch struct{ Proto string }

func (m ProtoMatch) String() string { return "meta l4proto " + m.Proto }

// MarkMatch compares the packet mark, which is the socket's SO_MARK for
// locally generated packets.
type MarkMatch struct {
	Not  bool
	Mark uint32
}

func (m MarkMatch) String() string { return fmt.Sprintf("meta mark %s0x%08x", neg(m.Not), m.Mark) }

// ArpSenderMatch matches ARP packets whose sender IPv4 address is in
// Prefix (bridge family).
type ArpSenderMatch struct {
	Prefix netip.Prefix
}

func (m ArpSenderMatch) String() string {
	if m.Prefix.IsSingleIP() {
		return fmt.Sprintf("arp saddr ip %s", m.Prefix.Addr())
	}
	return fmt.Sprintf("arp saddr ip %s", m.Prefix)
}

// ICMPTypeMatch matches an ICMP (v4) type.
type ICMPTypeMatch struct{ Type uint8 }

// ICMPRedirect is the type of ICMP redirects, how a host tells another to
// route through someone else.
const ICMPRedirect uint8 = 5

func (m ICMPTypeMatch) String() string {
	if m.Type == ICMPRedirect {
		return "icmp type redirect"
	}
	return fmt.Sprintf("icmp type %d", m.Type)
}

// CtEstablishedRelated matches packets of connections already allowed.
type CtEstablishedRelated struct{}

func (CtEstablishedRelated) String() string { return "ct state established,related" }

func (IfaceMatch) isMatch()           {}
func (IfaceSetMatch) isMatch()        {}
func (AddrMatch) isMatch()            {}
func (PortMatch) isMatch()            {}
func (ProtoMatch) isMatch()           {}
func (MarkMatch) isMatch()            {}
func (CtEstablishedRelated) isMatch() {}
func (PortSetMatch) isMatch()         {}
func (ArpSenderMatch) isMatch()       {}
func (ICMPTypeMatch) isMatch()        {}

func neg(not bool) string {
	if not {
		return "!= "
	}
	return ""
}

// Verdict is what a rule does with a matching packet.
type Verdict int

const (
	Accept Verdict = iota
	Drop
	// RejectAdmin answers with ICMP(v6) administratively prohibited.
	RejectAdmin
	// RejectTCPReset answers with a TCP reset; only valid after a
	// ProtoMatch for tcp.
	RejectTCPReset
	Masquerade
	// Jump continues in the regular chain named by the rule's Target.
	Jump
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case RejectAdmin:
		return "reject with icmpx admin-prohibited"
	case RejectTCPReset:
		return "reject with tcp reset"
	case Masquerade:
		return "masquerade"
	case Jump:
		return "jump"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

func (r Rule) String() string {
	parts := make([]string, 0, len(r.Match)+2)
	for _, m := range r.Match {
		parts = append(parts, m.String())
	}
	parts = append(parts, r.Verdict.String())
	if r.Verdict == Jump {
		parts = append(parts, r.Target)
	}
	if r.Comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(parts, " ")
}

func priorityName(family string, p int32) string {
	switch {
	case family == "bridge" && p == PriorityBridgeFilter:
		return "filter"
	case family == "inet" && p == PriorityFilter:
		return "filter"
	case family == "inet" && p == PrioritySrcNAT:
		return "srcnat"
	}
	return fmt.Sprint(p)
}

// String renders the tables exactly as `nft list table inet <name>`
// followed by `nft list table bridge <name>` (if any) print them.
func (rs Ruleset) String() string {
	var b strings.Builder
	writeTable(&b, "inet", rs.Table, nil, rs.Chains)
	if rs.Bridge != nil {
		writeTable(&b, "bridge", rs.Table, rs.BridgeSets, rs.Bridge)
	}
	return b.String()
}

// writeTable writes a table as nft lists it: sets, then chains, each in
// the order they were added.
func writeTable(b *strings.Builder, family, name string, sets []Set, chains []Chain) {
	fmt.Fprintf(b, "table %s %s {\n", family, name)
	for i, s := range sets {
		if i > 0 {
			b.WriteString("\n")
		}
		writeSet(b, s)
	}
	for i, c := range chains {
		if i > 0 || len(sets) > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(b, "\tchain %s {\n", c.Name)
		if c.Hook != "" {
			fmt.Fprintf(b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.Type, c.Hook, priorityName(family, c.Priority))
		}
		for _, r := range c.Rules {
			fmt.Fprintf(b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
}

// writeSet writes a set as nft lists it: one element a line, sorted as
// nft sorts them, which reads each key (bytes) as a little-endian number:
// by its last byte first.
func writeSet(b *strings.Builder, s Set) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", s.Name, s.Key)
	if len(s.Elements) > 0 {
		elems := slices.Clone(s.Elements)
		slices.SortFunc(elems, func(x, y SetElement) int { return compareReversed(x.bytes(s.Key), y.bytes(s.Key)) })
		parts := make([]string, len(elems))
		for i, e := range elems {
			parts[i] = e.render(s.Key)
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(parts, ",\n\t\t\t     "))
	}
	b.WriteString("\t}\n")
}

// compareReversed compares two keys of the same length from the last
// byte to the first.
func compareReversed(x, y []byte) int {
	for i := len(x) - 1; i >= 0; i-- {
		if x[i] != y[i] {
			return int(x[i]) - int(y[i])
		}
	}
	return 0
}
