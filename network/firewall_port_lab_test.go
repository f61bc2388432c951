package network

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
)

// canonicalNFT is an nft listing with the sets and chains of each table
// in name order. The kernel lists chains in the order they were added,
// which for ports added one by one differs from a full apply's; the order
// of chains changes nothing they do, and nft sorts set elements itself.
func canonicalNFT(listing string) string {
	var out []string
	for _, table := range strings.SplitAfter(listing, "}\n}\n") {
		head, body, ok := strings.Cut(table, "{\n")
		if !ok {
			out = append(out, table)
			continue
		}
		body = strings.TrimSuffix(body, "}\n")
		blocks := strings.Split(strings.TrimSuffix(body, "\n"), "\n\n")
		slices.Sort(blocks)
		out = append(out, head+"{\n"+strings.Join(blocks, "\n\n")+"\n}\n")
	}
	return strings.Join(out, "")
}

// listBoth is both of our tables as nft lists them in the lab's host.
func (l *fwLab) listBoth(table string) string {
	l.t.Helper()
	return l.listTable(table) + l.inHost("nft", "list", "table", "bridge", table)
}

func (l *fwLab) lockPort(table string, v FirewallVNet, p FirewallPort) {
	l.t.Helper()
	if err := inNetns(l.host, func() error { return AddPort(context.Background(), table, v, p) }); err != nil {
		l.t.Fatalf("AddPort %s: %v", p.Name, err)
	}
}

func (l *fwLab) unlockPort(table string, v FirewallVNet, p FirewallPort) {
	l.t.Helper()
	if err := inNetns(l.host, func() error { return RemovePort(context.Background(), table, v, p) }); err != nil {
		l.t.Fatalf("RemovePort %s: %v", p.Name, err)
	}
}

// TestPortAddsMatchFullApply adds and removes ports one at a time and
// checks each time that the kernel holds what a full apply of the same
// spec installs.
func TestPortAddsMatchFullApply(t *testing.T) {
	l := newFWLab(t)
	hostreq.RequireTool(t, "nft", "nftables")
	table := "lvt" + l.id
	full := lockedLabSpec(table)
	// Without ports; VNet "two" lets its guests talk, as "one" does, so
	// both kinds of VNet are covered.
	full.VNets[1].PeerTraffic = PeerAllow
	full.VNets[0].PeerTraffic = PeerDeny
	empty := full
	empty.VNets = slices.Clone(full.VNets)
	for i := range empty.VNets {
		empty.VNets[i].Ports = nil
	}
	// fullApply is the listing a full apply of spec gives; it leaves
	// spec applied.
	fullApply := func(spec FirewallSpec) string {
		t.Helper()
		l.apply(spec)
		return canonicalNFT(l.listBoth(table))
	}
	check := func(what string, spec FirewallSpec, got string) {
		t.Helper()
		if want := fullApply(spec); canonicalNFT(got) != want {
			t.Fatalf("%s: kernel differs from a full apply:\n--- after incremental changes\n%s--- full apply\n%s", what, canonicalNFT(got), want)
		}
	}

	l.apply(empty)
	one, two := full.VNets[0], full.VNets[1]
	l.lockPort(table, two, two.Ports[0])
	l.lockPort(table, one, one.Ports[1])
	l.lockPort(table, one, one.Ports[0])
	added := l.listBoth(table)
	check("three ports added", full, added)

	// Full apply above left the full spec: adding a port that is there
	// changes nothing, nor does removing one that is not.
	l.lockPort(table, one, one.Ports[0])
	if again := l.listBoth(table); canonicalNFT(again) != canonicalNFT(added) {
		t.Fatalf("adding a port again changed the table:\n%s\nwant\n%s", again, added)
	}
	l.unlockPort(table, one, FirewallPort{Name: PortName("nobody"), MAC: "52:54:00:01:00:99", IP: netip.MustParseAddr("10.250.1.99")})

	l.unlockPort(table, one, one.Ports[0])
	removed := l.listBoth(table)
	if strings.Contains(removed, one.Ports[0].Name) {
		t.Fatalf("port %s left behind:\n%s", one.Ports[0].Name, removed)
	}
	less := full
	less.VNets = slices.Clone(full.VNets)
	less.VNets[0].Ports = one.Ports[1:]
	check("one port removed", less, removed)

	// Every port gone again: the table with no ports.
	l.unlockPort(table, one, one.Ports[1])
	l.unlockPort(table, two, two.Ports[0])
	l.unlockPort(table, two, two.Ports[0])
	check("every port removed", empty, l.listBoth(table))

	// Without a locked table there is nothing to add to: an error, and
	// nothing is made.
	l.apply(labSpec(table))
	err := inNetns(l.host, func() error { return AddPort(context.Background(), table, one, one.Ports[0]) })
	if err == nil {
		t.Fatal("AddPort without a bridge table succeeded")
	}
	t.Log(err)
	if rs := l.inHost("nft", "list", "tables"); strings.Contains(rs, "bridge") {
		t.Fatalf("a failed AddPort left a bridge table:\n%s", rs)
	}
	l.remove(table)
}

// TestApplyFirewallManyPorts applies what a host with 10,000 guests
// needs in one transaction: the batch outgrows the netlink socket's
// default buffers (its acks did from about 25 locked ports), and a set's
// elements outgrow one netlink attribute.
func TestApplyFirewallManyPorts(t *testing.T) {
	l := newFWLab(t)
	hostreq.RequireTool(t, "nft", "nftables")
	table := "lvt" + l.id
	spec, port := benchSpec(table, 10000)
	l.apply(spec)
	last := spec.VNets[0].Ports[len(spec.VNets[0].Ports)-1]
	if got := l.inHost("nft", "get", "element", "bridge", table, portIPSet, fmt.Sprintf("{ %q . %s }", last.Name, last.IP)); !strings.Contains(got, last.IP.String()) {
		t.Fatalf("port %s missing:\n%s", last.Name, got)
	}
	l.lockPort(table, spec.VNets[0], port(10000))
	l.unlockPort(table, spec.VNets[0], port(10000))
	l.remove(table)
}

// benchSpec is one locked VNet with n ports, and the port numbered i.
func benchSpec(table string, n int) (FirewallSpec, func(i int) FirewallPort) {
	subnet := netip.MustParsePrefix("10.96.0.0/16")
	port := func(i int) FirewallPort {
		id := fmt.Sprintf("%012x", i+1)
		return FirewallPort{Name: PortName(id), MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff),
			IP: netip.AddrFrom4([4]byte{10, 96, byte((i + 2) >> 8), byte(i + 2)})}
	}
	v := FirewallVNet{Name: "bench", Bridge: "lvbbench", Subnet: subnet}
	for i := range n {
		v.Ports = append(v.Ports, port(i))
	}
	return FirewallSpec{TableName: table, LockPorts: true, VNets: []FirewallVNet{v}}, port
}

// benchNetns is a throwaway network namespace for a benchmark.
func benchNetns(b *testing.B) string {
	b.Helper()
	hostreq.RequireRoot(b)
	hostreq.RequireTool(b, "ip", "iproute2")
	name := "lvfw-bench-" + randomHex(b, 3)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	b.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			b.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// BenchmarkAddPort is the cost of locking one more port (AddPort) next to
// n others, which is what a create pays; RemovePort after each add keeps n
// and is not timed. BenchmarkApplyFirewallPorts is the full apply every
// create paid before, for comparison.
func BenchmarkAddPort(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("ports=%d", n), func(b *testing.B) {
			ns := benchNetns(b)
			table := "lvb" + randomHex(b, 3)
			spec, port := benchSpec(table, n)
			v := spec.VNets[0]
			err := inNetns(ns, func() error {
				if err := ApplyFirewall(context.Background(), spec); err != nil {
					return err
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					p := port(n + i%1000)
					if err := AddPort(context.Background(), table, v, p); err != nil {
						return err
					}
					b.StopTimer()
					if err := RemovePort(context.Background(), table, v, p); err != nil {
						return err
					}
					b.StartTimer()
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

func BenchmarkApplyFirewallPorts(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("ports=%d", n), func(b *testing.B) {
			ns := benchNetns(b)
			spec, _ := benchSpec("lvb"+randomHex(b, 3), n)
			err := inNetns(ns, func() error {
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := ApplyFirewall(context.Background(), spec); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
