package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
)

// labSpec is the firewall for the lab: VNet "one" (lvb1) may go out via
// NAT, VNet "two" (lvb2) may not.
func labSpec(table string) FirewallSpec {
	return FirewallSpec{
		TableName: table,
		VNets: []FirewallVNet{
			{Name: "one", Bridge: "lvb1", Subnet: netip.MustParsePrefix("10.250.1.0/24"), Egress: EgressNAT},
			{Name: "two", Bridge: "lvb2", Subnet: netip.MustParsePrefix("10.250.2.0/24"), Egress: EgressNone},
		},
		GatewayPorts: []GatewayPort{{Proto: "tcp", Port: 8000}, {Proto: "udp", Port: 53}, {Proto: "udp", Port: 67}},
	}
}

// newVNetLab adds both VNets of labSpec to a lab, with guests a1 and b1 on
// lvb1 and a2 on lvb2, SSH-like listeners on a1 and a2, a listener on the
// outside, and an allowed (8000) and a forbidden (9000) host service.
func newVNetLab(t *testing.T) *fwLab {
	l := newFWLab(t)
	l.addVNet("lvb1", netip.MustParsePrefix("10.250.1.0/24"))
	l.addVNet("lvb2", netip.MustParsePrefix("10.250.2.0/24"))
	l.addGuest("a1", "lvb1", netip.MustParsePrefix("10.250.1.10/24"))
	l.addGuest("b1", "lvb1", netip.MustParsePrefix("10.250.1.11/24"))
	l.addGuest("a2", "lvb2", netip.MustParsePrefix("10.250.2.10/24"))
	l.listen("a1", ":22")
	l.listen("a2", ":22")
	l.listen("outside", ":8080")
	l.listen("host", ":8000")
	l.listen("host", ":9000")
	return l
}

// probe is one connection attempt and its expected outcome.
type probe struct {
	name     string
	from, to string
	marked   bool   // dial with DialerControl
	wantErr  error  // nil: must connect; else errors.Is must hold
	wantSeen string // if set, the server must see this client address
}

func (l *fwLab) check(t *testing.T, probes []probe) {
	t.Helper()
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			var control func(string, string, syscall.RawConn) error
			if p.marked {
				control = DialerControl
			}
			seen, err := l.dial(p.from, p.to, control)
			switch {
			case p.wantErr == nil && err != nil:
				t.Fatalf("%s -> %s: %v, want a connection", p.from, p.to, err)
			case p.wantErr != nil && !isErr(err, p.wantErr):
				t.Fatalf("%s -> %s: error %v, want %v", p.from, p.to, err, p.wantErr)
			case p.wantSeen != "" && !strings.HasPrefix(seen, p.wantSeen+":"):
				t.Fatalf("%s -> %s: server saw %s, want %s", p.from, p.to, seen, p.wantSeen)
			}
		})
	}
}

// nobodyCanConnect tries addr as an unprivileged user in the host netns.
func (l *fwLab) nobodyCanConnect(t *testing.T, host, port string) bool {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.host, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"busybox", "nc", "-w", "2", host, port)
	out, err := cmd.CombinedOutput()
	t.Logf("nobody: nc %s %s: err=%v out=%q", host, port, err, out)
	return err == nil
}

// How a probe fails tells which verdict stopped it.
const (
	errUnreachable = syscall.EHOSTUNREACH // reject with icmpx admin-prohibited
	errRefused     = syscall.ECONNREFUSED // reject with tcp reset
)

// errTimeout stands for "dropped": the dial timed out.
var errTimeout = errors.New("timeout")

func isErr(err, want error) bool {
	if want == errTimeout {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}
	return errors.Is(err, want)
}

func TestFirewallIsolatesVNets(t *testing.T) {
	l := newVNetLab(t)
	hostreq.RequireTool(t, "setpriv", "util-linux")
	hostreq.RequireTool(t, "busybox", "busybox-static")

	// Without the firewall everything connects, so each failure below
	// is the firewall's work.
	l.check(t, []probe{
		{name: "baseline/outside to guest", from: "outside", to: "10.250.1.10:22"},
		{name: "baseline/across VNets", from: "a1", to: "10.250.2.10:22"},
		{name: "baseline/host to guest", from: "host", to: "10.250.1.10:22"},
		{name: "baseline/guest to host service", from: "a1", to: "10.250.1.1:9000"},
		{name: "baseline/egress none", from: "a2", to: labOutsideAddr + ":8080", wantSeen: "10.250.2.10"},
	})
	if !l.nobodyCanConnect(t, "10.250.1.10", "22") {
		t.Fatal("baseline: nobody cannot reach the guest even without a firewall")
	}

	l.apply(labSpec("lvt" + l.id))
	l.check(t, []probe{
		{name: "outside to guest ssh", from: "outside", to: "10.250.1.10:22", wantErr: errUnreachable},
		{name: "outside to egress-none guest", from: "outside", to: "10.250.2.10:22", wantErr: errUnreachable},
		{name: "VNet one to VNet two", from: "a1", to: "10.250.2.10:22", wantErr: errUnreachable},
		{name: "VNet two to VNet one", from: "a2", to: "10.250.1.10:22", wantErr: errUnreachable},
		{name: "egress nat is masqueraded", from: "a1", to: labOutsideAddr + ":8080", wantSeen: labHostAddr},
		{name: "egress none", from: "a2", to: labOutsideAddr + ":8080", wantErr: errUnreachable},
		{name: "same VNet", from: "b1", to: "10.250.1.10:22", wantSeen: "10.250.1.11"},
		{name: "host without mark", from: "host", to: "10.250.1.10:22", wantErr: errRefused},
		{name: "host with DialerControl", from: "host", to: "10.250.1.10:22", marked: true, wantSeen: "10.250.1.1"},
		{name: "daemon to egress-none guest", from: "host", to: "10.250.2.10:22", marked: true},
		{name: "guest to gateway allowed port", from: "a1", to: "10.250.1.1:8000", wantSeen: "10.250.1.10"},
		{name: "guest to gateway other port", from: "a1", to: "10.250.1.1:9000", wantErr: errTimeout},
		{name: "guest to other VNet gateway", from: "a1", to: "10.250.2.1:8000", wantErr: errTimeout},
		{name: "guest to host outside address", from: "a2", to: labHostAddr + ":8000", wantErr: errTimeout},
	})
	if l.nobodyCanConnect(t, "10.250.1.10", "22") {
		t.Error("user nobody reached a guest through the firewall")
	}

	// br_netfilter (loaded on many hosts) sends bridged frames through
	// the IP forward hook; same-VNet traffic must pass either way.
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		for _, on := range []string{"1", "0"} {
			l.sysctl(l.host, "net.bridge.bridge-nf-call-iptables", on)
			l.check(t, []probe{{name: "same VNet br_netfilter=" + on, from: "b1", to: "10.250.1.10:22"}})
		}
	} else {
		t.Log("br_netfilter not loaded; same-VNet traffic tested without it only")
	}
}

// listTable returns `nft list table` for our table in the host netns.
func (l *fwLab) listTable(table string) string {
	l.t.Helper()
	return l.inHost("nft", "list", "table", "inet", table)
}

func TestFirewallApplyIsIdempotentAndRemovable(t *testing.T) {
	l := newFWLab(t)
	hostreq.RequireTool(t, "nft", "nftables")
	l.addVNet("lvb1", netip.MustParsePrefix("10.250.1.0/24"))
	l.addVNet("lvb2", netip.MustParsePrefix("10.250.2.0/24"))
	table := "lvt" + l.id
	spec := labSpec(table)

	l.apply(spec)
	first := l.listTable(table)
	want, err := BuildFirewall(spec)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's ruleset, read back by nft, is exactly what BuildFirewall
	// described: nothing lost or reinterpreted in compilation.
	if first != want.String() {
		t.Fatalf("kernel ruleset differs from BuildFirewall:\n--- nft\n%s--- built\n%s", first, want)
	}
	l.apply(spec)
	if again := l.listTable(table); again != first {
		t.Fatalf("second apply changed the ruleset:\n%s\nwant\n%s", again, first)
	}

	spec.VNets = spec.VNets[:1]
	l.apply(spec)
	shrunk := l.listTable(table)
	if want, _ := BuildFirewall(spec); shrunk != want.String() {
		t.Fatalf("after dropping VNet two:\n%s\nwant\n%s", shrunk, want)
	}
	if strings.Contains(shrunk, "lvb2") || strings.Contains(shrunk, "10.250.2.") {
		t.Fatalf("rules for the removed VNet remain:\n%s", shrunk)
	}

	for i := range 2 {
		l.remove(table)
		if rs := l.inHost("nft", "list", "ruleset"); strings.TrimSpace(rs) != "" {
			t.Fatalf("RemoveFirewall #%d left rules behind:\n%s", i+1, rs)
		}
	}
}

func TestFirewallCoexistsWithIptablesForwardDrop(t *testing.T) {
	tests := []struct {
		name       string
		dockerUser bool   // emulate Docker's DOCKER-USER chain
		chain      string // where our accepts must land
	}{
		{name: "FORWARD only", chain: "FORWARD"},
		{name: "Docker DOCKER-USER", dockerUser: true, chain: "DOCKER-USER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newFWLab(t)
			hostreq.RequireTool(t, "iptables", "iptables")
			l.addVNet("lvb1", netip.MustParsePrefix("10.250.1.0/24"))
			l.addGuest("a1", "lvb1", netip.MustParsePrefix("10.250.1.10/24"))
			l.listen("a1", ":22")
			l.listen("outside", ":8080")

			// What Docker does to a host, in the lab's host netns only.
			l.inHost("iptables", "-P", "FORWARD", "DROP")
			l.inHost("iptables", "-A", "FORWARD", "-i", "docker0", "-j", "ACCEPT")
			if tt.dockerUser {
				l.inHost("iptables", "-N", "DOCKER-USER")
				l.inHost("iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
				l.inHost("iptables", "-A", "DOCKER-USER", "-j", "RETURN")
			}
			before := l.inHost("iptables", "-S")
			l.check(t, []probe{{name: "DROP policy blocks egress", from: "a1", to: labOutsideAddr + ":8080", wantErr: errTimeout}})

			table := "lvt" + l.id
			spec := labSpec(table)
			spec.VNets = spec.VNets[:1]
			l.apply(spec)
			l.check(t, []probe{
				{name: "egress nat despite DROP", from: "a1", to: labOutsideAddr + ":8080", wantSeen: labHostAddr},
				{name: "still closed from outside", from: "outside", to: "10.250.1.10:22", wantErr: errUnreachable},
			})

			applied := l.inHost("iptables", "-S")
			comment := `"labvm:` + table + `"` // iptables quotes it for the colon
			for _, rule := range []string{
				"-A " + tt.chain + " -i lvb1 -m comment --comment " + comment + " -j ACCEPT",
				"-A " + tt.chain + " -o lvb1 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment " + comment + " -j ACCEPT",
			} {
				if !strings.Contains(applied, rule+"\n") {
					t.Errorf("iptables -S lacks %q:\n%s", rule, applied)
				}
			}
			l.apply(spec)
			if again := l.inHost("iptables", "-S"); again != applied {
				t.Fatalf("second apply changed iptables:\n%s\nwant\n%s", again, applied)
			}

			l.remove(table)
			if after := l.inHost("iptables", "-S"); after != before {
				t.Fatalf("RemoveFirewall changed other iptables rules:\n%s\nwant\n%s", after, before)
			}
		})
	}
}

func TestRemoveFirewallWithoutTable(t *testing.T) {
	l := newFWLab(t)
	l.remove("lvt" + l.id)
	if err := inNetns(l.host, func() error { return RemoveFirewall(context.Background(), "bad name") }); !errors.Is(err, ErrInvalidFirewallSpec) {
		t.Fatalf("RemoveFirewall(bad name) = %v, want ErrInvalidFirewallSpec", err)
	}
}

// lockedLabSpec is labSpec with port security: two ports on lvb1 (which
// allows peer traffic), one on lvb2.
func lockedLabSpec(table string) FirewallSpec {
	s := labSpec(table)
	s.LockPorts = true
	s.VNets[0].PeerTraffic = PeerAllow
	s.VNets[0].Ports = []FirewallPort{
		{Name: PortName("a1"), MAC: "52:54:00:01:00:0a", IP: netip.MustParseAddr("10.250.1.10")},
		{Name: PortName("b1"), MAC: "52:54:00:01:00:0b", IP: netip.MustParseAddr("10.250.1.11")},
	}
	s.VNets[1].Ports = []FirewallPort{
		{Name: PortName("a2"), MAC: "52:54:00:02:00:0a", IP: netip.MustParseAddr("10.250.2.10")},
	}
	return s
}

func TestFirewallLockedApplyMatchesBuilder(t *testing.T) {
	l := newFWLab(t)
	hostreq.RequireTool(t, "nft", "nftables")
	table := "lvt" + l.id
	spec := lockedLabSpec(table)
	want, err := BuildFirewall(spec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		l.apply(spec)
		got := l.listTable(table) + l.inHost("nft", "list", "table", "bridge", table)
		if got != want.String() {
			t.Fatalf("apply #%d: kernel ruleset differs from BuildFirewall:\n--- nft\n%s--- built\n%s", i+1, got, want)
		}
	}
	// Unlocking removes the bridge table in the same transaction.
	unlocked := labSpec(table)
	l.apply(unlocked)
	if rs := l.inHost("nft", "list", "tables"); strings.Contains(rs, "bridge") {
		t.Fatalf("bridge table left after unlocking:\n%s", rs)
	}
	l.apply(spec)
	l.remove(table)
	if rs := l.inHost("nft", "list", "ruleset"); strings.TrimSpace(rs) != "" {
		t.Fatalf("RemoveFirewall left rules behind:\n%s", rs)
	}
}
