package network

import (
	"fmt"
	"net/netip"
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

	// ForeignForward are accept rules to keep at the top of iptables'
	// filter FORWARD chain (DOCKER-USER when it exists), if the host has
	// one. They carry Comment so they can be found and removed again.
	ForeignForward []Rule
}

// Chain priorities labvm uses, named as nft names them.
const (
	PriorityFilter int32 = 0
	PrioritySrcNAT int32 = 100
)

// Chain is a base chain; its policy is always accept (see BuildFirewall).
type Chain struct {
	Name     string
	Type     string // "filter" or "nat"
	Hook     string // "forward", "input", "output" or "postrouting"
	Priority int32
	Rules    []Rule
}

// Rule matches packets when all of Match match, then applies Verdict.
type Rule struct {
	Match   []Match
	Verdict Verdict
	Comment string
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

func (m IfaceMatch) String() string {
	key := "iifname"
	if m.Out {
		key = "oifname"
	}
	return fmt.Sprintf("%s %s%q", key, neg(m.Not), m.Name)
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

// CtEstablishedRelated matches packets of connections already allowed.
type CtEstablishedRelated struct{}

func (CtEstablishedRelated) String() string { return "ct state established,related" }

func (IfaceMatch) isMatch()           {}
func (AddrMatch) isMatch()            {}
func (PortMatch) isMatch()            {}
func (ProtoMatch) isMatch()           {}
func (MarkMatch) isMatch()            {}
func (CtEstablishedRelated) isMatch() {}

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
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

func (r Rule) String() string {
	parts := make([]string, 0, len(r.Match)+2)
	for _, m := range r.Match {
		parts = append(parts, m.String())
	}
	parts = append(parts, r.Verdict.String())
	if r.Comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(parts, " ")
}

func priorityName(p int32) string {
	switch p {
	case PriorityFilter:
		return "filter"
	case PrioritySrcNAT:
		return "srcnat"
	}
	return fmt.Sprint(p)
}

// String renders the table exactly as `nft list table inet <name>` does.
func (rs Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", rs.Table)
	for i, c := range rs.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.Type, c.Hook, priorityName(c.Priority))
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
