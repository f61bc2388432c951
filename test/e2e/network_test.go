package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// outsideHost is another machine on the network, made as a network
// namespace joined to this host by a veth pair, with a route to the
// VNets through this host.
type outsideHost struct {
	ns       string
	addr     netip.Addr // the outside host's address
	hostSide netip.Addr // this host's address on the link
}

func newOutsideHost(t *testing.T, routeTo ...netip.Prefix) outsideHost {
	t.Helper()
	link := freeSubnet(t) // a /24; the link uses its first two addresses
	o := outsideHost{ns: "lvtout" + randHex(3), hostSide: link.Addr().Next(), addr: link.Addr().Next().Next()}
	hostIf, nsIf := "lvo"+randHex(3), "lvi"+randHex(3)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("ip", "netns", "add", o.ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", o.ns).Run() })
	run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	run("ip", "link", "set", nsIf, "netns", o.ns)
	run("ip", "addr", "add", o.hostSide.String()+"/24", "dev", hostIf)
	run("ip", "link", "set", hostIf, "up")
	run("ip", "-n", o.ns, "addr", "add", o.addr.String()+"/24", "dev", nsIf)
	run("ip", "-n", o.ns, "link", "set", nsIf, "up")
	run("ip", "-n", o.ns, "link", "set", "lo", "up")
	for _, p := range routeTo {
		run("ip", "-n", o.ns, "route", "add", p.String(), "via", o.hostSide.String())
	}
	return o
}

// connect tries a TCP connection from the outside host.
func (o outsideHost) connect(addr netip.Addr, port int) error {
	out, err := exec.Command("ip", "netns", "exec", o.ns, "busybox", "nc", "-w", "3", addr.String(), fmt.Sprint(port)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// serve starts a one-page HTTP server on the outside host until the test ends.
func (o outsideHost) serve(t *testing.T, port int) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", o.ns, "busybox", "httpd", "-f", "-p", fmt.Sprint(port), "-h", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// guestHTTP starts an HTTP server in the guest and returns a probe that
// fetches a URL from inside another guest.
func serveInGuest(t *testing.T, d *labvmd, name string, port int) {
	t.Helper()
	d.must("exec", name, "--", "sh", "-c", fmt.Sprintf("mkdir -p /tmp/www && echo hello-from-%s > /tmp/www/index.html && busybox httpd -p %d -h /tmp/www", name, port))
}

// httpGetFromGuest sends a plain HTTP request from inside guest name with
// busybox nc (the test image's static wget cannot resolve names) and
// returns what came back.
func httpGetFromGuest(d *labvmd, name string, ip string, port int) string {
	r := d.labvm("exec", name, "--", "sh", "-c", fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s %d`, ip, port))
	return r.stdout
}

// fetchFromGuest reports whether guest name gets the page of the guest
// server at ip:port.
func fetchFromGuest(d *labvmd, name, ip string, port int) bool {
	return strings.Contains(httpGetFromGuest(d, name, ip, port), "hello-from-")
}

func (d *labvmd) showInstance(name string) api.Instance {
	d.t.Helper()
	var inst api.Instance
	d.jsonOut(&inst, "show", name)
	return inst
}

func (d *labvmd) nftTable() string {
	out, _ := exec.Command("nft", "list", "table", "inet", d.table).CombinedOutput()
	return string(out)
}

// How a TCP connection by busybox nc ends when only the firewall answers,
// as nc says it. A check that something is blocked asserts one of these,
// so a missing tool or a typo in the probe never counts as a refusal.
const (
	ncRejected = "No route to host"   // reject with icmpx admin-prohibited
	ncReset    = "Connection refused" // reject with tcp reset; also nothing listening, so check the listener too
	ncTimedOut = "timed out"          // drop: nothing comes back
)

// refusedFromGuest checks that an HTTP request from inside guest name to
// ip:port fails the way the firewall makes it fail: nc says one of ways.
func refusedFromGuest(t *testing.T, d *labvmd, name, ip string, port int, ways ...string) {
	t.Helper()
	r := d.labvm("exec", name, "--", "sh", "-c", fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s %d`, ip, port))
	if strings.Contains(r.stdout, "HTTP/1") {
		t.Errorf("%s reached %s:%d:\n%s\n%s", name, ip, port, r.stdout, d.nftTable())
		return
	}
	for _, w := range ways {
		if strings.Contains(r.stderr, w) {
			return
		}
	}
	t.Errorf("%s → %s:%d failed, but not as the firewall refuses (want %q): exit %d\nstdout: %s\nstderr: %s",
		name, ip, port, ways, r.code, r.stdout, r.stderr)
}

// TestNetworkIsolation: guests are reachable only through the daemon.
// Nothing outside the host connects in, VNets cannot see each other,
// local users cannot reach guests, egress follows each VNet's setting, and
// the rules survive a daemon crash exactly as they were.
func TestNetworkIsolation(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image)

	t.Log("an owner makes a second VNet without egress, with one subnet")
	research := freeSubnet(t)
	gpu := netip.PrefixFrom(research.Addr(), 25)
	d.must("network", "create", "research", "--cidr", research.String(), "--egress", "none", "--peer-traffic", "allow")
	d.chapter(t, "bad VNets, subnets and placements are refused", func(t *testing.T) {
		d.mustFail("--peer-traffic", "network", "create", "chatty", "--cidr", freeSubnet(t).String(), "--peer-traffic", "sometimes")
		d.mustFail("loopback", "network", "create", "local", "--cidr", "127.1.0.0/16")
		d.mustFail("link-local", "network", "create", "meta", "--cidr", "169.254.0.0/16")
		d.mustFail("multicast", "network", "create", "multi", "--cidr", "224.1.0.0/16")
		d.mustFail("not inside", "network", "subnet", "add", "research", "bad", "--cidr", "10.1.2.0/24")
		d.mustFail("overlaps", "network", "create", "again", "--cidr", research.String())
		d.mustFail("not a CIDR", "network", "create", "broken", "--cidr", "10.300.0.0/16")
		d.mustFail("--egress", "network", "create", "weird", "--cidr", freeSubnet(t).String(), "--egress", "sometimes")
	})
	d.must("network", "subnet", "add", "research", "gpu", "--cidr", gpu.String())
	d.chapter(t, "creates naming an unknown VNet or subnet are refused", func(t *testing.T) {
		d.mustFail("unknown vnet", "create", "lost-dev", "--image", "tiny", "--size", "Standard_B1s", "--vnet", "nowhere")
		d.mustFail("unknown subnet", "create", "lost-dev", "--image", "tiny", "--size", "Standard_B1s", "--vnet", "research", "--subnet", "cpu")
	})

	t.Log("two instances share the default subnet; two more sit in research/gpu")
	d.must("create", "web-one", "--image", "tiny", "--size", "Standard_B1s")
	d.must("create", "web-two", "--image", "tiny", "--size", "Standard_B1s")
	d.must("create", "lab-one", "--image", "tiny", "--size", "Standard_B1s", "--vnet", "research", "--subnet", "gpu")
	d.must("create", "lab-two", "--image", "tiny", "--size", "Standard_B1s", "--vnet", "research", "--subnet", "gpu")
	one, two, lab, lab2 := d.showInstance("web-one"), d.showInstance("web-two"), d.showInstance("lab-one"), d.showInstance("lab-two")
	d.chapter(t, "instances sit where asked, and a VNet in use cannot be deleted", func(t *testing.T) {
		if lab.VNet != "research" || lab.Subnet != "gpu" || !gpu.Contains(netip.MustParseAddr(lab.IP)) {
			t.Errorf("lab-one placed at %s/%s %s", lab.VNet, lab.Subnet, lab.IP)
		}
		var vnet api.VNet
		d.jsonOut(&vnet, "network", "show", "default")
		if vnet.PeerTraffic != "deny" {
			t.Errorf("the default VNet's peer traffic is %q, want deny", vnet.PeerTraffic)
		}
		if len(vnet.Addresses) != 2 {
			t.Errorf("network show lists %d addresses in use, want 2: %+v", len(vnet.Addresses), vnet.Addresses)
		}
		d.mustFail("used by lab-one", "network", "delete", "research")
	})

	// Every guest serves a page; the guests' own fetches of their own page
	// are the positive controls of the probes below.
	for _, name := range []string{"web-one", "web-two", "lab-one", "lab-two"} {
		serveInGuest(t, d, name, 8080)
	}
	out := newOutsideHost(t, d.subnet, research)
	out.serve(t, 9090)

	d.chapter(t, "on the default VNet guests do not reach each other; on research (peer traffic allowed) they do; across VNets never", func(t *testing.T) {
		for _, g := range []api.Instance{one, two, lab} {
			if !fetchFromGuest(d, g.Name, g.IP, 8080) {
				t.Fatalf("%s does not get its own page: the probe itself is broken", g.Name)
			}
		}
		if !fetchFromGuest(d, "lab-two", lab.IP, 8080) {
			t.Errorf("lab-two cannot reach lab-one on research, which allows peer traffic\n%s", d.nftTable())
		}
		// Peers on a deny VNet: the bridge drops every frame between their
		// ports, ARP included, so nothing ever answers.
		refusedFromGuest(t, d, "web-one", two.IP, 8080, ncTimedOut, ncRejected)
		// Across VNets the host routes, and the forward chain rejects.
		refusedFromGuest(t, d, "web-one", lab.IP, 8080, ncRejected)
		refusedFromGuest(t, d, "lab-one", two.IP, 8080, ncRejected)
	})

	d.chapter(t, "an outside host cannot open anything in a VNet: not SSH, not the web port", func(t *testing.T) {
		if err := out.connect(out.addr, 9090); err != nil {
			t.Fatalf("the outside host cannot reach its own server: the probe itself is broken: %v", err)
		}
		for _, target := range []struct {
			ip   string
			port int
		}{{one.IP, 22}, {two.IP, 8080}, {lab.IP, 22}, {lab.IP, 8080}, {lab2.IP, 8080}} {
			err := out.connect(netip.MustParseAddr(target.ip), target.port)
			switch {
			case err == nil:
				t.Errorf("outside host connected to %s:%d", target.ip, target.port)
			case !strings.Contains(err.Error(), ncRejected):
				t.Errorf("outside host → %s:%d failed, but not as the firewall rejects (%q): %v", target.ip, target.port, ncRejected, err)
			}
		}
	})

	d.chapter(t, "egress: the default VNet NATs out, research reaches nothing outside", func(t *testing.T) {
		waitFor(t, 10*time.Second, "nat egress from web-one", func() bool {
			return strings.Contains(httpGetFromGuest(d, "web-one", out.addr.String(), 9090), "HTTP/1")
		})
		refusedFromGuest(t, d, "lab-one", out.addr.String(), 9090, ncRejected)
	})

	d.chapter(t, "on the host, a local user cannot connect to a guest; only the daemon can", func(t *testing.T) {
		// The page is there (the refusal below is the firewall's reset,
		// not a server that is down), and the daemon's tunnel gets it.
		if !fetchFromGuest(d, "web-two", two.IP, 8080) {
			t.Fatal("web-two does not serve its page")
		}
		nc := exec.Command("timeout", "10", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "busybox", "nc", "-w", "3", two.IP, "8080")
		outb, err := nc.CombinedOutput()
		switch {
		case err == nil:
			t.Errorf("user nobody connected to web-two:8080 from the host: %s", outb)
		case !strings.Contains(string(outb), ncReset):
			t.Errorf("user nobody → web-two:8080 failed, but not with the firewall's reset (%q): %v\n%s", ncReset, err, outb)
		}
		tun := exec.Command(bins.labvm, "tunnel", "web-two", "8080")
		tun.Env = append(os.Environ(), d.cliEnv()...)
		tun.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
		if got, err := tun.Output(); err != nil || !strings.Contains(string(got), "hello-from-web-two") {
			t.Errorf("labvm tunnel web-two 8080 (through the daemon): %v\n%s", err, got)
		}
	})

	d.chapter(t, "killing labvmd and starting it again leaves bridges and rules exactly as they were", func(t *testing.T) {
		before, bridgesBefore := d.nftTable(), strings.Join(d.vnetBridges(), ",")
		if !strings.Contains(before, "table inet "+d.table) {
			t.Fatalf("no firewall table:\n%s", before)
		}
		d.kill()
		d.start()
		if after := d.nftTable(); after != before {
			t.Errorf("ruleset changed across a restart:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if after := strings.Join(d.vnetBridges(), ","); after != bridgesBefore {
			t.Errorf("bridges changed across a restart: %s → %s", bridgesBefore, after)
		}
	})

	d.chapter(t, "deleting the last instance and then its VNet removes its bridge and rules", func(t *testing.T) {
		d.must("delete", "lab-one", "--yes")
		d.must("delete", "lab-two", "--yes")
		d.must("network", "subnet", "remove", "research", "gpu")
		d.must("network", "delete", "research")
		if brs := d.vnetBridges(); len(brs) != 0 {
			t.Errorf("bridges left after deleting the VNet: %v", brs)
		}
		if strings.Contains(d.nftTable(), lab.IP) || strings.Contains(d.nftTable(), research.String()) {
			t.Errorf("rules for research left:\n%s", d.nftTable())
		}
		var vnets []api.VNet
		if err := json.Unmarshal([]byte(d.must("network", "list", "-o", "json")), &vnets); err != nil || len(vnets) != 1 {
			t.Errorf("network list after delete: %+v %v", vnets, err)
		}
	})
}

func waitFor(t *testing.T, max time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(max)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", max, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
