package network

import (
	"crypto/rand"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// The port security lab: one VNet bridge lvb1 (10.250.1.0/24) in the
// lab's host namespace, which holds the gateway 10.250.1.1 and a service
// on port 8000 guests may reach. Guests a and b are the instances the
// firewall knows, on ports named by PortName; u is plugged in on a port
// nobody told the firewall about.

const secFrames = 20 // frames sent per attack

type labPort struct {
	role string
	port string
	mac  net.HardwareAddr
	ip   netip.Addr
}

// addPort plugs a guest namespace into bridge through a veth whose host
// end is called port, like the tap libvirt makes for a domain.
func (l *fwLab) addPort(role, bridge, port, mac string, addr netip.Prefix) labPort {
	l.t.Helper()
	ns := l.addNetns(role)
	l.guests[role] = ns
	l.ip("-n", l.host, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	l.ip("-n", l.host, "link", "set", port, "master", bridge, "up")
	l.ip("-n", ns, "link", "set", "eth0", "address", mac)
	l.ip("-n", ns, "addr", "add", addr.String(), "dev", "eth0")
	l.ip("-n", ns, "link", "set", "eth0", "up")
	l.ip("-n", ns, "route", "add", "default", "via", Gateway(addr.Masked()).String())
	return labPort{role: role, port: port, mac: mustMAC(mac), ip: addr.Addr()}
}

func (p labPort) firewallPort() FirewallPort {
	return FirewallPort{Name: p.port, MAC: p.mac.String(), IP: p.ip}
}

// neighbourMAC is the host's neighbour entry for ip on dev ("" if none).
func (l *fwLab) neighbourMAC(dev string, ip netip.Addr) string {
	l.t.Helper()
	out := l.run("ip", "-n", l.host, "neigh", "show", ip.String(), "dev", dev)
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// ping reports whether role gets an answer from addr.
func (l *fwLab) ping(role string, addr netip.Addr) bool {
	l.t.Helper()
	err := exec.Command("ip", "netns", "exec", l.ns(role), "busybox", "ping", "-c", "1", "-W", "1", addr.String()).Run()
	return err == nil
}

// dialFrom connects from role's namespace using local address src.
func (l *fwLab) dialFrom(role string, src netip.Addr, addr string) error {
	return inNetns(l.ns(role), func() error {
		d := net.Dialer{Timeout: labDialTimeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err := d.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func marker(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// attack is a kind of frame one guest sends, and who must (not) get it.
type attack struct {
	name  string
	from  labPort
	to    string // "host" or a guest role whose eth0 is watched
	frame func(m []byte) []byte
	// arrives per phase: no firewall, peer deny, peer allow.
	arrives [3]bool
}

func TestPortSecurity(t *testing.T) {
	l := newFWLab(t)
	hostreq.RequireTool(t, "busybox", "busybox-static")
	subnet := netip.MustParsePrefix("10.250.1.0/24")
	gw := Gateway(subnet)
	l.addVNet("lvb1", subnet)
	id := func(role string) string { return l.id + role } // instance ids unique to this run
	a := l.addPort("a", "lvb1", PortName(id("a")), "52:54:00:01:00:0a", netip.MustParsePrefix("10.250.1.10/24"))
	b := l.addPort("b", "lvb1", PortName(id("b")), "52:54:00:01:00:0b", netip.MustParsePrefix("10.250.1.11/24"))
	u := l.addPort("u", "lvb1", PortName(id("u")), "52:54:00:01:00:0c", netip.MustParsePrefix("10.250.1.12/24"))
	l.listen("host", ":8000")
	l.listen("a", ":22")
	l.listen("b", ":22")

	// u also tries a source outside the VNet, for which the host has a
	// route back, as an attacker with root on the host's side might hope.
	foreign := netip.MustParseAddr("172.31.77.7")
	l.ip("-n", l.ns("u"), "addr", "add", foreign.String()+"/32", "dev", "eth0")
	l.ip("-n", l.host, "route", "add", foreign.String()+"/32", "dev", "lvb1")
	// a knows b's MAC, so its frames to b really go out at layer 2
	// instead of stopping at an unanswered ARP request.
	l.ip("-n", l.ns("a"), "neigh", "replace", b.ip.String(), "lladdr", b.mac.String(), "dev", "eth0", "nud", "permanent")

	var bridgeMAC net.HardwareAddr
	if err := inNetns(l.host, func() error {
		ifi, err := net.InterfaceByName("lvb1")
		if err == nil {
			bridgeMAC = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	table := "lvt" + l.id
	spec := func(peers PeerTraffic) FirewallSpec {
		return FirewallSpec{
			TableName:    table,
			LockPorts:    true,
			GatewayPorts: []GatewayPort{{Proto: "tcp", Port: 8000}},
			VNets: []FirewallVNet{{
				Name: "sec", Bridge: "lvb1", Subnet: subnet, PeerTraffic: peers,
				Ports: []FirewallPort{a.firewallPort(), b.firewallPort()},
			}},
		}
	}
	forgedMAC := mustMAC("52:54:00:de:ad:01")
	v6src, v6all := netip.MustParseAddr("fe80::5054:ff:fe01:a"), netip.MustParseAddr("ff02::1")
	ipv6AllNodes := mustMAC("33:33:00:00:00:01")
	all, none, peersOnly := [3]bool{true, true, true}, [3]bool{true, false, false}, [3]bool{true, false, true}
	attacks := []attack{
		{"legit a to host", a, "host", func(m []byte) []byte {
			return ethFrame(bridgeMAC, a.mac, 0x0800, ipv4(a.ip, gw, 17, udp(4000, 9999, m)))
		}, all},
		{"legit a to b", a, "b", func(m []byte) []byte {
			return ethFrame(b.mac, a.mac, 0x0800, ipv4(a.ip, b.ip, 17, udp(4000, 9999, m)))
		}, peersOnly},
		{"a spoofs b's IP to host", a, "host", func(m []byte) []byte {
			return ethFrame(bridgeMAC, a.mac, 0x0800, ipv4(b.ip, gw, 17, udp(4000, 9999, m)))
		}, none},
		// labvm cp's guest end trusts a connection from the gateway.
		{"a spoofs the gateway's IP to b", a, "b", func(m []byte) []byte {
			return ethFrame(b.mac, a.mac, 0x0800, ipv4(gw, b.ip, 17, udp(4000, 9999, m)))
		}, none},
		{"a spoofs an unused IP to b", a, "b", func(m []byte) []byte {
			return ethFrame(b.mac, a.mac, 0x0800, ipv4(netip.MustParseAddr("10.250.1.99"), b.ip, 17, udp(4000, 9999, m)))
		}, none},
		{"a forges its MAC to host", a, "host", func(m []byte) []byte {
			return ethFrame(bridgeMAC, forgedMAC, 0x0800, ipv4(a.ip, gw, 17, udp(4000, 9999, m)))
		}, none},
		{"a forges its MAC to b", a, "b", func(m []byte) []byte {
			return ethFrame(b.mac, forgedMAC, 0x0800, ipv4(a.ip, b.ip, 17, udp(4000, 9999, m)))
		}, none},
		{"a's DHCP offer (udp sport 67) to b", a, "b", func(m []byte) []byte {
			return ethFrame(broadcastMAC, a.mac, 0x0800, ipv4(a.ip, netip.MustParseAddr("255.255.255.255"), 17, udp(67, 68, m)))
		}, none},
		{"a's ICMP redirect to b", a, "b", func(m []byte) []byte {
			return ethFrame(b.mac, a.mac, 0x0800, ipv4(a.ip, b.ip, 1, icmpRedirect(a.ip, m)))
		}, none},
		{"a's IPv6 to host", a, "host", func(m []byte) []byte {
			return ethFrame(ipv6AllNodes, a.mac, 0x86dd, ipv6UDP(v6src, v6all, m))
		}, none},
		{"a's IPv6 to b", a, "b", func(m []byte) []byte {
			return ethFrame(ipv6AllNodes, a.mac, 0x86dd, ipv6UDP(v6src, v6all, m))
		}, none},
		{"a's VLAN-tagged IPv4 to b", a, "b", func(m []byte) []byte {
			return vlanFrame(b.mac, a.mac, 5, 0x0800, ipv4(a.ip, b.ip, 17, udp(4000, 9999, m)))
		}, none},
		{"a's ARP reply claiming b's IP to host", a, "host", func(m []byte) []byte {
			return append(ethFrame(bridgeMAC, a.mac, 0x0806, arp(2, a.mac, b.ip, bridgeMAC, gw))[:42], pad(m)...)
		}, none},
		{"a's gratuitous ARP claiming b's IP to host", a, "host", func(m []byte) []byte {
			return append(ethFrame(broadcastMAC, a.mac, 0x0806, arp(1, a.mac, b.ip, make(net.HardwareAddr, 6), b.ip))[:42], pad(m)...)
		}, none},
		{"a's ARP reply claiming the gateway to b", a, "b", func(m []byte) []byte {
			return append(ethFrame(b.mac, a.mac, 0x0806, arp(2, a.mac, gw, b.mac, b.ip))[:42], pad(m)...)
		}, none},
		{"unknown port to host", u, "host", func(m []byte) []byte {
			return ethFrame(bridgeMAC, u.mac, 0x0800, ipv4(u.ip, gw, 17, udp(4000, 9999, m)))
		}, none},
		{"unknown port to b", u, "b", func(m []byte) []byte {
			return ethFrame(b.mac, u.mac, 0x0800, ipv4(u.ip, b.ip, 17, udp(4000, 9999, m)))
		}, none},
		{"unknown port with a foreign source to b", u, "b", func(m []byte) []byte {
			return ethFrame(b.mac, u.mac, 0x0800, ipv4(foreign, b.ip, 17, udp(4000, 9999, m)))
		}, none},
		{"unknown port's IPv6 to b", u, "b", func(m []byte) []byte {
			return ethFrame(ipv6AllNodes, u.mac, 0x86dd, ipv6UDP(v6src, v6all, m))
		}, none},
	}

	phases := []struct {
		name string
		spec *FirewallSpec
	}{
		{"no firewall", nil},
		{"peer deny", ptr(spec(PeerDeny))},
		{"peer allow", ptr(spec(PeerAllow))},
	}
	for pi, phase := range phases {
		t.Run(strings.ReplaceAll(phase.name, " ", "-"), func(t *testing.T) {
			if phase.spec != nil {
				l.apply(*phase.spec)
			}
			locked := phase.spec != nil
			l.ip("-n", l.host, "neigh", "flush", "dev", "lvb1")

			// Frame counts: what a guest sends and what arrives.
			watch := map[string]*capture{"host": startCapture(t, l.host, "lvb1"), "b": startCapture(t, l.ns("b"), "eth0")}
			markers := make([][]byte, len(attacks))
			for i, at := range attacks {
				markers[i] = marker(t)
				sendFrames(t, l.ns(at.from.role), secFrames, at.frame(markers[i]))
			}
			for i, at := range attacks {
				got := watch[at.to].count(markers[i])
				want := 0
				if at.arrives[pi] {
					want = secFrames
				}
				t.Logf("%-45s sent %2d, arrived at %-4s %2d (want %d)", at.name, secFrames, at.to, got, want)
				if got != want {
					t.Errorf("%s: %d of %d frames arrived at %s, want %d", at.name, got, secFrames, at.to, want)
				}
			}

			// ARP poisoning: the host knows b, then a claims b's address.
			if err := l.dialMarked("host", b.ip.String()+":22"); err != nil {
				t.Fatalf("daemon to b before the attack: %v", err)
			}
			time.Sleep(1100 * time.Millisecond) // past the neighbour table's locktime
			sendFrames(t, l.ns("a"), secFrames,
				ethFrame(broadcastMAC, a.mac, 0x0806, arp(1, a.mac, b.ip, make(net.HardwareAddr, 6), b.ip)),
				ethFrame(bridgeMAC, a.mac, 0x0806, arp(2, a.mac, b.ip, bridgeMAC, gw)))
			time.Sleep(200 * time.Millisecond)
			entry := l.neighbourMAC("lvb1", b.ip)
			t.Logf("host neighbour %s after %d gratuitous ARPs and %d ARP replies from a: %s (a %s, b %s)", b.ip, secFrames, secFrames, entry, a.mac, b.mac)
			switch {
			case !locked && entry != a.mac.String():
				t.Errorf("without the firewall the attack should work (proving the test), but %s -> %q", b.ip, entry)
			case locked && entry != b.mac.String():
				t.Errorf("ARP poisoning: host's entry for %s is %q, want b's %s", b.ip, entry, b.mac)
			}
			if locked {
				if err := l.dialMarked("host", b.ip.String()+":22"); err != nil {
					t.Errorf("daemon to b after the attack: %v", err)
				}
			}
			l.ip("-n", l.host, "neigh", "flush", "dev", "lvb1") // undo a successful attack

			// Peers, directly at layer 2 and routed through the host.
			peersPass := !locked || phase.spec.VNets[0].PeerTraffic == PeerAllow
			_, err := l.dial("a", b.ip.String()+":22", nil)
			pinged := l.ping("a", b.ip)
			t.Logf("a -> b tcp: %v; ping answered: %v", err, pinged)
			if (err == nil) != peersPass {
				t.Errorf("a -> b tcp: %v, want success %v", err, peersPass)
			}
			if pinged != peersPass {
				t.Errorf("a pings b: %v, want %v", pinged, peersPass)
			}
			l.ip("-n", l.ns("a"), "route", "add", b.ip.String()+"/32", "via", gw.String())
			_, err = l.dial("a", b.ip.String()+":22", nil)
			l.ip("-n", l.ns("a"), "route", "del", b.ip.String()+"/32", "via", gw.String())
			if (err == nil) != peersPass {
				t.Errorf("a -> b routed via the gateway: %v, want success %v", err, peersPass)
			}

			// What must keep working.
			l.check(t, []probe{
				{name: "a to gateway service", from: "a", to: gw.String() + ":8000", wantSeen: a.ip.String()},
				{name: "daemon to a", from: "host", to: a.ip.String() + ":22", marked: true, wantSeen: gw.String()},
			})
			if locked {
				l.check(t, []probe{{name: "others on the host to a", from: "host", to: a.ip.String() + ":22", wantErr: errRefused}})
			}

			// The unknown port reaches nothing at the host, with a VNet
			// address or a foreign one.
			for _, src := range []netip.Addr{u.ip, foreign} {
				err := l.dialFrom("u", src, gw.String()+":8000")
				t.Logf("unknown port from %s to the gateway service: %v", src, err)
				if (err == nil) == locked {
					t.Errorf("unknown port from %s to the gateway service: %v, want success %v", src, err, !locked)
				}
			}
		})
	}

	// br_netfilter sends bridged IPv4 through the inet forward hook too;
	// peer traffic must follow the VNet's setting either way.
	if _, err := exec.LookPath("sysctl"); err == nil {
		for _, peers := range []PeerTraffic{PeerDeny, PeerAllow} {
			l.apply(spec(peers))
			for _, on := range []string{"1", "0"} {
				if err := exec.Command("ip", "netns", "exec", l.host, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables="+on).Run(); err != nil {
					t.Logf("br_netfilter sysctl unavailable: %v", err)
					continue
				}
				_, err := l.dial("a", b.ip.String()+":22", nil)
				if (err == nil) != (peers == PeerAllow) {
					t.Errorf("peer %v, br_netfilter=%s: a -> b: %v", peers, on, err)
				}
			}
		}
	}
	l.remove(table)
}

// dialMarked connects from role with the daemon's mark.
func (l *fwLab) dialMarked(role, addr string) error {
	_, err := l.dial(role, addr, DialerControl)
	return err
}

// pad is the padding of a 42-byte ARP frame to 60 bytes, with m in it.
func pad(m []byte) []byte {
	p := make([]byte, 18)
	copy(p, m)
	return p
}

func ptr[T any](v T) *T { return &v }
