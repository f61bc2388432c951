package network

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/labvm/labvm/test/hostreq"
)

func TestDialerControlSetsMark(t *testing.T) {
	hostreq.RequireRoot(t) // SO_MARK needs CAP_NET_ADMIN
	// A UDP "dial" sends nothing, so this touches no network.
	c, err := (&net.Dialer{Control: DialerControl}).Dial("udp", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var markErr error
	if err := raw.Control(func(fd uintptr) { mark, markErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
		t.Fatal(err)
	}
	if markErr != nil || uint32(mark) != DaemonMark {
		t.Fatalf("SO_MARK = %#x, %v; want %#x", mark, markErr, DaemonMark)
	}
}

func TestCompileRuleRejectsImpossibleRules(t *testing.T) {
	tests := []struct {
		name   string
		family nftables.TableFamily
		rule   Rule
	}{
		{"tcp reset without tcp", nftables.TableFamilyINet, Rule{Match: []Match{InIface("br0")}, Verdict: RejectTCPReset}},
		{"icmpx outside inet", nftables.TableFamilyIPv4, Rule{Verdict: RejectAdmin}},
		{"tcp and udp at once", nftables.TableFamilyINet, Rule{Match: []Match{DstPort("tcp", 1), DstPort("udp", 2)}}},
		{"unknown protocol", nftables.TableFamilyINet, Rule{Match: []Match{ProtoMatch{Proto: "sctp"}}}},
		{"IPv6 address", nftables.TableFamilyINet, Rule{Match: []Match{SrcAddr(netip.MustParsePrefix("fd00::/64"))}}},
		{"unknown verdict", nftables.TableFamilyINet, Rule{Verdict: 42}},
		{"jump without target", nftables.TableFamilyBridge, Rule{Verdict: Jump}},
		{"port set outside bridge", nftables.TableFamilyINet, Rule{Match: []Match{PortSetMatch{Key: KeyPortMAC, Set: "port-mac"}}}},
		{"port set of names only", nftables.TableFamilyBridge, Rule{Match: []Match{PortSetMatch{Key: KeyPort, Set: "ports"}}}},
		{"arp outside bridge", nftables.TableFamilyINet, Rule{Match: []Match{ArpSenderMatch{Prefix: netip.MustParsePrefix("10.0.0.1/32")}}}},
		{"arp with IPv6", nftables.TableFamilyBridge, Rule{Match: []Match{ArpSenderMatch{Prefix: netip.MustParsePrefix("fd00::1/128")}}}},
		{"icmpx reject in bridge", nftables.TableFamilyBridge, Rule{Verdict: RejectAdmin}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := compileRule(tt.family, tt.rule, false); err == nil {
				t.Fatalf("compileRule(%s) succeeded", tt.rule)
			}
		})
	}
}
