package network

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// applyAttempts bounds retries of a transaction that lost a race with
// another program editing iptables' chains between our listing and our
// commit (the kernel then rejects the whole batch with ENOENT).
const applyAttempts = 3

// ApplyFirewall makes the kernel's firewall match spec, in one nftables
// transaction: our table is deleted and re-created with the new rules,
// and our accept rules in iptables' filter FORWARD/DOCKER-USER chain are
// replaced, all in the same batch. Packets therefore see either the old
// or the new policy, never a moment without rules. Calling it again with
// the same spec leaves the same ruleset.
//
// It acts on the network namespace of the calling thread.
func ApplyFirewall(ctx context.Context, spec FirewallSpec) error {
	rs, err := BuildFirewall(spec)
	if err != nil {
		return err
	}
	if err := commitWithRetry(ctx, rs, true); err != nil {
		return fmt.Errorf("apply firewall table inet %s: %w", rs.Table, err)
	}
	return nil
}

// RemoveFirewall deletes our table and our rules in iptables' chains. It
// is idempotent: nothing to remove is not an error.
func RemoveFirewall(ctx context.Context, tableName string) error {
	if tableName == "" {
		tableName = DefaultFirewallTable
	}
	if err := validateTableName(tableName); err != nil {
		return err
	}
	if err := commitWithRetry(ctx, Ruleset{Table: tableName}, false); err != nil {
		return fmt.Errorf("remove firewall table inet %s: %w", tableName, err)
	}
	return nil
}

func commitWithRetry(ctx context.Context, rs Ruleset, install bool) error {
	var err error
	for range applyAttempts {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if err = commit(rs, install); !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return err
}

// commit replaces (install) or removes (!install) rs in one batch.
func commit(rs Ruleset, install bool) error {
	conn, err := nftables.New(nftables.WithSockOptions(batchBuffers(rs)))
	if err != nil {
		return fmt.Errorf("open nftables netlink socket: %w", err)
	}
	foreign, err := findForeignForward(conn, foreignComment(rs.Table))
	if err != nil {
		return err
	}

	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: rs.Table}
	bridge := &nftables.Table{Family: nftables.TableFamilyBridge, Name: rs.Table}
	// Adding first makes the delete valid whether or not the table
	// exists, without a listing that could race with another writer.
	for _, t := range []*nftables.Table{table, bridge} {
		conn.AddTable(t)
		conn.DelTable(t)
	}
	if install {
		conn.AddTable(table)
		if err := addChains(conn, table, rs.Chains, nil); err != nil {
			return err
		}
		if rs.Bridge != nil {
			conn.AddTable(bridge)
			if err := addChains(conn, bridge, rs.Bridge, rs.BridgeSets); err != nil {
				return err
			}
		}
	}
	for _, r := range foreign.ours {
		if err := conn.DelRule(r); err != nil {
			return fmt.Errorf("delete old rule in ip filter %s: %w", r.Chain.Name, err)
		}
	}
	if install && foreign.target != nil {
		// Inserting puts a rule first, so go backwards to keep our order.
		for i := len(rs.ForeignForward) - 1; i >= 0; i-- {
			exprs, err := compileRule(nftables.TableFamilyIPv4, rs.ForeignForward[i], true)
			if err != nil {
				return err
			}
			conn.InsertRule(&nftables.Rule{Table: foreign.target.Table, Chain: foreign.target, Exprs: exprs})
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("commit nftables transaction: %w", err)
	}
	return nil
}

// batchBuffers sizes the netlink socket's buffers for the batch that
// installs rs. The whole batch is one sendmsg, which the kernel refuses
// (EMSGSIZE) beyond the send buffer, and every message in it is
// acknowledged at once, which overflows the receive buffer (ENOBUFS)
// long before that (with the default 208 KiB, a few hundred messages).
// nft sizes its buffers to its batch the same way. They are limits, not
// allocations, on a socket that lives for one transaction, so the
// estimate errs on the large side: a few KiB a message (a table, chain,
// rule, set or batch of elements, each acknowledged), and the elements'
// own bytes.
func batchBuffers(rs Ruleset) nftables.SockOption {
	messages, elements := 8+len(rs.ForeignForward), 0
	for _, chains := range [][]Chain{rs.Chains, rs.Bridge} {
		for _, c := range chains {
			messages += 1 + len(c.Rules)
		}
	}
	for _, s := range rs.BridgeSets {
		messages += 1 + (len(s.Elements)+setElementsPerMessage-1)/setElementsPerMessage
		elements += len(s.Elements)
	}
	const base, perMessage, perElement = 1 << 20, 4 << 10, 256
	size := min(base+perMessage*messages+perElement*elements, math.MaxInt32/2)
	return func(c *netlink.Conn) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = raw.Control(func(fd uintptr) {
			for _, opt := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
				// Only CAP_NET_ADMIN may pass net.core.[rw]mem_max;
				// without it, as much as that allows.
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[0], size); e != nil {
					if e = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[1], size); e != nil {
						serr = fmt.Errorf("size netlink socket buffers: %w", e)
					}
				}
			}
		})
		return errors.Join(err, serr)
	}
}

func chainHook(name string) (*nftables.ChainHook, bool) {
	switch name {
	case "prerouting":
		return nftables.ChainHookPrerouting, true
	case "forward":
		return nftables.ChainHookForward, true
	case "input":
		return nftables.ChainHookInput, true
	case "output":
		return nftables.ChainHookOutput, true
	case "postrouting":
		return nftables.ChainHookPostrouting, true
	}
	return nil, false
}

// addChains adds chains, then sets, then the chains' rules to table: a
// jump needs its chain to exist, and a lookup its set.
func addChains(conn *nftables.Conn, table *nftables.Table, chains []Chain, sets []Set) error {
	accept := nftables.ChainPolicyAccept
	added := make([]*nftables.Chain, len(chains))
	for i, c := range chains {
		if c.Hook == "" {
			added[i] = conn.AddChain(&nftables.Chain{Name: c.Name, Table: table})
			continue
		}
		hook, ok := chainHook(c.Hook)
		if !ok {
			return fmt.Errorf("chain %s: unsupported hook %q", c.Name, c.Hook)
		}
		added[i] = conn.AddChain(&nftables.Chain{
			Name:     c.Name,
			Table:    table,
			Type:     nftables.ChainType(c.Type),
			Hooknum:  hook,
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(c.Priority)),
			Policy:   &accept,
		})
	}
	setIDs := map[string]uint32{}
	for _, s := range sets {
		set := kernelSet(table, s.Name, s.Key)
		if err := conn.AddSet(set, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		setIDs[s.Name] = set.ID
		// The elements of one message are one netlink attribute, whose
		// length is 16 bits: a few hundred elements at most.
		for chunk := range slices.Chunk(s.Elements, setElementsPerMessage) {
			if err := conn.SetAddElements(set, kernelElements(s.Key, chunk)); err != nil {
				return fmt.Errorf("set %s: %w", s.Name, err)
			}
		}
	}
	for ci, c := range chains {
		if err := addRules(conn, added[ci], c.Rules, setIDs); err != nil {
			return err
		}
	}
	return nil
}

// setElementsPerMessage keeps a message's elements (each under 100 bytes)
// well inside 64 KiB.
const setElementsPerMessage = 256

// addRules appends rules to ch. setIDs are the sets added in the same
// batch; others are found by name.
func addRules(conn *nftables.Conn, ch *nftables.Chain, rules []Rule, setIDs map[string]uint32) error {
	for i, r := range rules {
		exprs, err := compileRule(ch.Table.Family, r, false)
		if err != nil {
			return fmt.Errorf("chain %s rule %d (%s): %w", ch.Name, i+1, r, err)
		}
		for _, e := range exprs {
			if l, ok := e.(*expr.Lookup); ok {
				l.SetID = setIDs[l.SetName]
			}
		}
		rule := &nftables.Rule{Table: ch.Table, Chain: ch, Exprs: exprs}
		if r.Comment != "" {
			rule.UserData = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
		}
		conn.AddRule(rule)
	}
	return nil
}

// kernelSet is a set of ports, or of ports with their MAC and/or
// address.
func kernelSet(table *nftables.Table, name string, key SetKey) *nftables.Set {
	// nft keeps interface names in host byte order, and without being
	// told so lists the elements as empty strings.
	s := &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
	if key == KeyPort {
		return s
	}
	types := []nftables.SetDatatype{nftables.TypeIFName}
	if key.hasMAC() {
		types = append(types, nftables.TypeEtherAddr)
	}
	if key.hasIP() {
		types = append(types, nftables.TypeIPAddr)
	}
	s.KeyType, s.Concatenation = nftables.MustConcatSetType(types...), true
	return s
}

// kernelElements are elems as the kernel takes them.
func kernelElements(key SetKey, elems []SetElement) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(elems))
	for _, e := range elems {
		out = append(out, nftables.SetElement{Key: kernelKey(key, e)})
	}
	return out
}

// kernelKey is e's key in the kernel's layout: the fields one after
// another, each padded to whole 32-bit registers (IFNAMSIZ is; a MAC takes
// two), as the rules load them (see portSetMatch).
func kernelKey(key SetKey, e SetElement) []byte {
	k := ifname(e.Port)
	if key.hasMAC() {
		k = append(append(k, e.MAC...), 0, 0)
	}
	if key.hasIP() {
		a := e.IP.As4()
		k = append(k, a[:]...)
	}
	return k
}

// Registers for concatenated keys: after the interface name in register 1
// (four 32-bit registers, NFT_REG32_00 to 03) come the MAC (04, 05) and the
// address (06, or 04 without a MAC). The verdict register is 0.
const (
	regConcat04 = unix.NFT_REG32_04
	regConcat06 = unix.NFT_REG32_06
)

// portSetMatch loads what m matches into consecutive registers and looks
// it up in m's set.
func portSetMatch(m PortSetMatch) ([]expr.Any, error) {
	iif := &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}
	lookup := &expr.Lookup{SourceRegister: 1, SetName: m.Set, Invert: m.Not}
	switch m.Key {
	case KeyPortMAC:
		return []expr.Any{iif,
			&expr.Payload{DestRegister: regConcat04, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			lookup}, nil
	case KeyPortMACIP:
		out := etherType(unix.ETH_P_ARP)
		// htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4; then the
		// sender's hardware address at offset 8, its address at 14.
		return append(out,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 4},
			cmp(expr.CmpOpEq, []byte{0, 1, 8, 0}),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 4, Len: 2},
			cmp(expr.CmpOpEq, []byte{6, 4}),
			iif,
			&expr.Payload{DestRegister: regConcat04, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 6},
			&expr.Payload{DestRegister: regConcat06, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 4},
			lookup), nil
	case KeyPortIP:
		return []expr.Any{iif,
			&expr.Payload{DestRegister: regConcat04, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			lookup}, nil
	}
	return nil, fmt.Errorf("unsupported port set key %d", int(m.Key))
}

// foreignForward is what we found in iptables' filter table.
type foreignForward struct {
	target *nftables.Chain  // where our accepts go; nil: no such chain
	ours   []*nftables.Rule // our rules from an earlier run, to delete
}

// findForeignForward looks for the table iptables-nft calls "filter" (in
// the ip family). Docker's FORWARD policy DROP lives there, and a DROP in
// any base chain on the forward hook is final, whatever our table says.
// Docker reserves DOCKER-USER for the admin's rules and never flushes it,
// so that is the preferred place; otherwise FORWARD itself.
func findForeignForward(conn *nftables.Conn, comment string) (foreignForward, error) {
	var found foreignForward
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return found, fmt.Errorf("list ip chains: %w", err)
	}
	var forward, dockerUser *nftables.Chain
	for _, c := range chains {
		if c.Table.Name != "filter" {
			continue
		}
		switch {
		case c.Name == "DOCKER-USER":
			dockerUser = c
		case c.Name == "FORWARD" && c.Hooknum != nil && *c.Hooknum == *nftables.ChainHookForward:
			forward = c
		}
	}
	found.target = forward
	if dockerUser != nil && forward != nil {
		found.target = dockerUser
	}
	for _, c := range []*nftables.Chain{forward, dockerUser} {
		if c == nil {
			continue
		}
		rules, err := conn.GetRules(c.Table, c)
		if err != nil {
			return found, fmt.Errorf("list rules of ip filter %s: %w", c.Name, err)
		}
		for _, r := range rules {
			if hasXtComment(r, comment) {
				r.Table, r.Chain = c.Table, c
				found.ours = append(found.ours, r)
			}
		}
	}
	return found, nil
}

func hasXtComment(r *nftables.Rule, comment string) bool {
	for _, e := range r.Exprs {
		m, ok := e.(*expr.Match)
		if !ok || m.Name != "comment" {
			continue
		}
		if c, ok := m.Info.(*xt.Comment); ok && string(*c) == comment {
			return true
		}
	}
	return false
}

// compileRule turns r into kernel expressions. With iptablesCompat the
// rule is built the way iptables-nft builds it (xt matches for conntrack
// and comment, a counter), so `iptables -S` can still show the chain
// instead of refusing to parse it.
func compileRule(family nftables.TableFamily, r Rule, iptablesCompat bool) ([]expr.Any, error) {
	var out []expr.Any
	// Payload matches need their protocol checked first, or they read the
	// wrong bytes of other protocols' packets. nft adds these dependencies
	// silently and hides them again when listing, and so do we.
	haveIPv4 := family == nftables.TableFamilyIPv4
	bridge := family == nftables.TableFamilyBridge
	needIPv4 := func() {
		switch {
		case haveIPv4:
		case bridge:
			// The bridge family sees frames, not packets of one
			// protocol: check the Ethernet type, which also refuses
			// VLAN-tagged frames (nft puts the tag back for this).
			out = append(out, etherType(unix.ETH_P_IP)...)
		default:
			out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmp(expr.CmpOpEq, []byte{unix.NFPROTO_IPV4}))
		}
		haveIPv4 = true
	}
	l4 := ""
	needL4 := func(proto string) error {
		num, ok := map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "icmp": unix.IPPROTO_ICMP}[proto]
		switch {
		case !ok:
			return fmt.Errorf("unsupported protocol %q", proto)
		case l4 == proto:
			return nil
		case l4 != "":
			return fmt.Errorf("rule matches both %s and %s", l4, proto)
		}
		l4 = proto
		out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp(expr.CmpOpEq, []byte{num}))
		return nil
	}

	for _, m := range r.Match {
		switch m := m.(type) {
		case IfaceMatch:
			key := expr.MetaKeyIIFNAME
			if m.Out {
				key = expr.MetaKeyOIFNAME
			}
			out = append(out, &expr.Meta{Key: key, Register: 1}, cmp(cmpOp(m.Not), ifname(m.Name)))
		case IfaceSetMatch:
			out = append(out, ifaceMeta(m.Out), &expr.Lookup{SourceRegister: 1, SetName: m.Set, Invert: m.Not})
		case AddrMatch:
			if !m.Prefix.Addr().Is4() {
				return nil, fmt.Errorf("%s: only IPv4 addresses are supported", m)
			}
			needIPv4()
			offset := uint32(12) // source address in the IPv4 header
			if m.Dst {
				offset = 16
			}
			out = append(out, matchPrefix(offset, m.Prefix)...)
		case ArpSenderMatch:
			if !bridge || !m.Prefix.Addr().Is4() {
				return nil, fmt.Errorf("%s: needs a bridge table and an IPv4 prefix", m)
			}
			out = append(out, etherType(unix.ETH_P_ARP)...)
			out = append(out, matchPrefix(14, m.Prefix)...) // sender protocol address
		case PortSetMatch:
			if !bridge {
				return nil, fmt.Errorf("%s: needs a bridge table", m)
			}
			if m.Key == KeyPortIP {
				needIPv4()
			}
			exprs, err := portSetMatch(m)
			if err != nil {
				return nil, err
			}
			out = append(out, exprs...)
		case ICMPTypeMatch:
			needIPv4()
			if err := needL4("icmp"); err != nil {
				return nil, err
			}
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				cmp(expr.CmpOpEq, []byte{m.Type}))
		case ProtoMatch:
			if err := needL4(m.Proto); err != nil {
				return nil, err
			}
		case PortMatch:
			if err := needL4(m.Proto); err != nil {
				return nil, err
			}
			offset := uint32(0) // source port, same place in TCP and UDP
			if m.Dst {
				offset = 2
			}
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
				cmp(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(m.Port)))
		case MarkMatch:
			out = append(out, &expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
				cmp(cmpOp(m.Not), binaryutil.NativeEndian.PutUint32(m.Mark)))
		case CtEstablishedRelated:
			out = append(out, ctEstablishedRelated(iptablesCompat)...)
		default:
			return nil, fmt.Errorf("unsupported match %T", m)
		}
	}
	if iptablesCompat && r.Comment != "" {
		comment := xt.Comment(r.Comment)
		out = append(out, &expr.Match{Name: "comment", Info: &comment}, &expr.Counter{})
	}

	switch r.Verdict {
	case Accept:
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	case Drop:
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	case RejectAdmin:
		if family != nftables.TableFamilyINet {
			return nil, errors.New("icmpx reject needs an inet table")
		}
		out = append(out, &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})
	case RejectTCPReset:
		if l4 != "tcp" {
			return nil, errors.New("tcp reset needs a tcp match before it")
		}
		out = append(out, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	case Masquerade:
		out = append(out, &expr.Masq{})
	case Jump:
		if r.Target == "" {
			return nil, errors.New("jump without a target chain")
		}
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.Target})
	default:
		return nil, fmt.Errorf("unsupported verdict %v", r.Verdict)
	}
	return out, nil
}

// ctStateEstablishedRelated is "ct state established,related" as a bit
// mask. nft and xt_conntrack share the encoding 1<<(ctinfo+1), with
// IP_CT_ESTABLISHED = 0 and IP_CT_RELATED = 1.
const ctStateEstablishedRelated = 1<<(0+1) | 1<<(1+1)

func ctEstablishedRelated(iptablesCompat bool) []expr.Any {
	if iptablesCompat {
		return []expr.Any{&expr.Match{Name: "conntrack", Rev: 3, Info: &xt.ConntrackMtinfo3{
			ConntrackMtinfo2: xt.ConntrackMtinfo2{
				ConntrackMtinfoBase: xt.ConntrackMtinfoBase{MatchFlags: uint16(xt.ConntrackState)},
				StateMask:           ctStateEstablishedRelated,
			},
		}}}
	}
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ctStateEstablishedRelated), Xor: make([]byte, 4)},
		cmp(expr.CmpOpNeq, make([]byte, 4)),
	}
}

// matchPrefix compares the IPv4 address at offset of the network header
// with p.
func matchPrefix(offset uint32, p netip.Prefix) []expr.Any {
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
	if !p.IsSingleIP() {
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)})
	}
	addr := p.Masked().Addr().As4()
	return append(out, cmp(expr.CmpOpEq, addr[:]))
}

// etherType matches the Ethernet type of a frame.
func etherType(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		cmp(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(t)),
	}
}

// ifaceMeta loads the input (or output) interface name into register 1.
func ifaceMeta(out bool) *expr.Meta {
	if out {
		return &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}
	}
	return &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}
}

func cmp(op expr.CmpOp, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: op, Register: 1, Data: data}
}

func cmpOp(not bool) expr.CmpOp {
	if not {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

// ifname pads name to IFNAMSIZ as nft does, so it compares exactly and
// not as a prefix.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
