package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/test/etcdtest"
	"github.com/labvm/labvm/test/hostreq"
)

// clusterHost is one labvmd of a test cluster: the libvirt test driver
// (simulated domains, no guest), its own socket, bridge and firewall, and
// a labvmd.yaml joining it to the test's etcd with its own certificate.
type clusterHost struct {
	*labvmd
	name string
}

// newClusterHost starts a clustered labvmd; sshURL, when set, is the
// address it publishes for creates placed on it.
func newClusterHost(t *testing.T, e *etcdtest.Cluster, cluster, name, sshURL string, extra ...string) *clusterHost {
	t.Helper()
	return newClusterHostIn(t, "", e, cluster, name, sshURL, extra...)
}

// newClusterHostIn is newClusterHost with labvmd in the network
// namespace netns ("" for the host's): its bridges, firewall and etcd
// connections are there; its socket is a path, reached from anywhere.
func newClusterHostIn(t *testing.T, netns string, e *etcdtest.Cluster, cluster, name, sshURL string, extra ...string) *clusterHost {
	t.Helper()
	cert, key := e.PKI.Issue(t, name)
	cfg := fmt.Sprintf("cluster:\n  name: %s\n  host: %s\n  ttl: 2s\n  ca: %s\n  cert: %s\n  key: %s\n  etcd: [%s]\n",
		cluster, name, e.PKI.CAFile, cert, key, strings.Join(e.Endpoints(), ", "))
	if sshURL != "" {
		cfg += "  ssh: " + sshURL + "\n"
	}
	path := filepath.Join(t.TempDir(), "labvmd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--config", path, "--libvirt-uri", "test:///default", "--ready-probe", "none"}, extra...)
	d := newDaemon(t, args...)
	if netns != "" {
		d.wrap = []string{"ip", "netns", "exec", netns}
	}
	d.start()
	return &clusterHost{labvmd: d, name: name}
}

// hosts is `labvm hosts -o json` through h.
func (h *clusterHost) hosts() map[string]api.ClusterHost {
	var list []api.ClusterHost
	h.jsonOut(&list, "hosts")
	out := map[string]api.ClusterHost{}
	for _, x := range list {
		out[x.Name] = x
	}
	return out
}

// clusterList is `labvm list --cluster -o json` through h, as
// NAME@HOST(host state) → state; a failed call fails t.
func (h *clusterHost) clusterList() map[string]string {
	h.t.Helper()
	out, err := h.tryClusterList()
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// tryClusterList is clusterList returning its error (for retries).
func (h *clusterHost) tryClusterList() (map[string]string, error) {
	r := h.labvm("list", "--cluster", "-o", "json")
	if r.code != 0 {
		return nil, fmt.Errorf("labvm list --cluster on %s: exit %d: %s", h.name, r.code, r.stderr)
	}
	var list []api.ClusterInstance
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, i := range list {
		out[i.Name+"@"+i.Host+"("+string(i.HostState)+")"] = string(i.State)
	}
	return out, nil
}

// within retries check for up to d, failing t with its last error.
func within(t *testing.T, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterRegistry is the story of two hosts sharing a cluster
// through a real etcd with mutual TLS: each publishes itself and its
// instances; any host lists them all with their host; a host that dies
// is shown lost with its instances kept, and comes back; with etcd down
// every host keeps serving its own instances and the cluster reads fail
// clearly, until etcd returns and everything is published again.
func TestClusterRegistry(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	e := etcdtest.Start(t, 3)
	cl := "e2e" + randHex(3)
	group := "lvc" + randHex(3)
	testGroup(t, group)
	ann := testUser(t, group+"-ann", group)
	n1 := newClusterHost(t, e, cl, "n1-"+randHex(2), "", "--socket-group", group)
	n2 := newClusterHost(t, e, cl, "n2-"+randHex(2), "", "--socket-group", group)
	for _, h := range []*clusterHost{n1, n2} {
		h.must("image", "import", "tiny", image)
	}
	n1.must("create", "alpha", "--image", "tiny", "--size", "Standard_B1s", "--here")
	n2.must("create", "beta", "--image", "tiny", "--size", "Standard_B2s", "--here")

	n1.chapter(t, "every host lists both hosts up and every instance with its host", func(t *testing.T) {
		within(t, 10*time.Second, func() error {
			if out := n1.must("info"); !strings.Contains(out, "Cluster:     "+cl+", as host "+n1.name+" (connected)") {
				return fmt.Errorf("info does not show the membership:\n%s", out)
			}
			return nil
		})
		within(t, 10*time.Second, func() error {
			hs := n1.hosts()
			if hs[n1.name].State != api.HostUp || hs[n2.name].State != api.HostUp || hs[n1.name].Instances != 1 || hs[n2.name].Instances != 1 {
				return fmt.Errorf("hosts %+v", hs)
			}
			if h := hs[n2.name]; h.Cores == 0 || h.CoresUsed != 2 || h.MemoryTotal == 0 || h.DiskFree == 0 {
				return fmt.Errorf("%s's capacity %+v", n2.name, h)
			}
			return nil
		})
		want := fmt.Sprintf("map[alpha@%s(up):Running beta@%s(up):Running]", n1.name, n2.name)
		within(t, 5*time.Second, func() error {
			if got := fmt.Sprint(n2.clusterList()); got != want {
				return fmt.Errorf("list --cluster on %s = %s, want %s", n2.name, got, want)
			}
			return nil
		})
		table := n2.must("list", "--cluster")
		if !strings.HasPrefix(table, "NAME") || !strings.Contains(strings.SplitN(table, "\n", 2)[0], "HOST") || !strings.Contains(table, n1.name) {
			t.Fatalf("list --cluster table:\n%s", table)
		}
		if out := n2.must("hosts"); !strings.Contains(out, "FREE CORES") || !strings.Contains(out, n1.name) {
			t.Fatalf("labvm hosts table:\n%s", out)
		}
	})

	n1.chapter(t, "a stop is published", func(t *testing.T) {
		n1.must("stop", "alpha")
		within(t, 10*time.Second, func() error {
			if got := n2.clusterList()["alpha@"+n1.name+"(up)"]; got != string(api.StateStopped) {
				return fmt.Errorf("alpha seen as %q from %s", got, n2.name)
			}
			return nil
		})
	})

	n1.chapter(t, "a name is unique across the cluster", func(t *testing.T) {
		r := n2.mustFail("already exists in cluster "+cl+" (on host "+n1.name, "create", "alpha", "--image", "tiny", "--size", "Standard_B1s", "--here")
		if !strings.Contains(r.stderr, "Hint:") {
			t.Fatalf("no hint:\n%s", r.stderr)
		}
		if out := n2.must("list"); strings.Contains(out, "alpha") {
			t.Fatalf("a refused create left a record on %s:\n%s", n2.name, out)
		}
	})

	n1.chapter(t, "the quota counts every host; a delete gives cores back", func(t *testing.T) {
		n1.must("quota", "set", "--cluster", "--family", "standardBSFamily", "4")
		// alpha (1 core, n1) + beta (2, n2) = 3 of 4.
		r := n2.mustFail("quota of family standardBSFamily exceeded: 3 of 4 cores used across its hosts", "create", "gamma", "--image", "tiny", "--size", "Standard_B2s", "--here")
		if !strings.Contains(r.stderr, "list --cluster") {
			t.Fatalf("the hint does not point at the cluster:\n%s", r.stderr)
		}
		n1.must("create", "gamma", "--image", "tiny", "--size", "Standard_B1s", "--here")
		var q api.Quota
		n2.jsonOut(&q, "quota", "--cluster", "-o", "json")
		if q.Total.Used != 4 {
			t.Fatalf("quota --cluster = %+v; want 4 cores used", q)
		}
		n2.mustFail("quota", "create", "delta", "--image", "tiny", "--size", "Standard_B1s", "--here")
		n1.must("delete", "gamma", "--yes")
		n2.must("create", "delta", "--image", "tiny", "--size", "Standard_B1s", "--here")
		n2.must("delete", "delta", "--yes")
		n1.must("quota", "set", "--cluster", "--family", "standardBSFamily", "0")
	})

	roleOn := func(h *clusterHost, u unixUser) (string, error) {
		r := h.as(u, "whoami", "-o", "json")
		var w api.WhoAmI
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &w) != nil {
			return "", fmt.Errorf("whoami as %s on %s: exit %d: %s", u.name, h.name, r.code, r.stderr)
		}
		return w.Role, nil
	}

	n1.chapter(t, "a role given on one host holds on every host", func(t *testing.T) {
		if role, err := roleOn(n2, ann); err != nil || role != "none" {
			t.Fatalf("%s's role on %s before = %q, %v", ann.name, n2.name, role, err)
		}
		n1.must("role", "assign", ann.name, "contributor")
		within(t, 10*time.Second, func() error {
			role, err := roleOn(n2, ann)
			if err == nil && role != "contributor" {
				err = fmt.Errorf("%s is %q on %s", ann.name, role, n2.name)
			}
			return err
		})
		if out := n2.must("role", "list"); !strings.Contains(out, ann.name) {
			t.Fatalf("role list on %s:\n%s", n2.name, out)
		}
	})

	n1.chapter(t, "a host killed is lost, its instances kept; it comes back", func(t *testing.T) {
		n1.kill()
		within(t, 15*time.Second, func() error {
			if s := n2.hosts()[n1.name].State; s != api.HostLost {
				return fmt.Errorf("%s is %q after a kill", n1.name, s)
			}
			if _, ok := n2.clusterList()["alpha@"+n1.name+"(lost)"]; !ok {
				return fmt.Errorf("alpha not listed on lost %s: %v", n1.name, n2.clusterList())
			}
			return nil
		})
		if out := n2.must("list", "--cluster"); !strings.Contains(out, n1.name+" (lost)") {
			t.Fatalf("the table does not say the host is lost:\n%s", out)
		}
		n1.start()
		within(t, 15*time.Second, func() error {
			if s := n2.hosts()[n1.name].State; s != api.HostUp {
				return fmt.Errorf("%s is %q after its restart", n1.name, s)
			}
			return nil
		})
	})

	n1.chapter(t, "one etcd member of three killed: everything works", func(t *testing.T) {
		e.Members[0].Kill()
		within(t, 20*time.Second, func() error {
			if r := n1.labvm("create", "eta", "--image", "tiny", "--size", "Standard_B1s", "--here"); r.code != 0 {
				return fmt.Errorf("create with a member down: %s", r.stderr)
			}
			return nil
		})
		within(t, 10*time.Second, func() error {
			list, err := n2.tryClusterList()
			if err == nil && list["eta@"+n1.name+"(up)"] == "" {
				err = fmt.Errorf("eta not listed from %s: %v", n2.name, list)
			}
			return err
		})
		n1.must("delete", "eta", "--yes")
		e.Members[0].Restart(t)
		e.WaitHealthy(t, 30*time.Second)
	})

	n1.chapter(t, "etcd down: local work goes on, creates and cluster reads are refused clearly; all republished after", func(t *testing.T) {
		n2.must("create", "zeta", "--image", "tiny", "--size", "Standard_B1s", "--here")
		for _, m := range e.Members {
			m.Kill()
		}
		within(t, 15*time.Second, func() error {
			if out := n2.must("info"); !strings.Contains(out, "not connected to etcd") {
				return fmt.Errorf("info with etcd down:\n%s", out)
			}
			return nil
		})
		r := n2.mustFail("cluster registry", "hosts")
		if !strings.Contains(r.stderr, "Hint:") || !strings.Contains(r.stderr, "without --cluster") {
			t.Fatalf("no hint:\n%s", r.stderr)
		}
		n2.mustFail("unreachable", "list", "--cluster")
		if out := n2.must("list"); !strings.Contains(out, "beta") {
			t.Fatalf("local list with etcd down:\n%s", out)
		}
		n2.must("stop", "beta")
		n2.must("start", "beta")
		n2.must("stop", "beta")
		r = n2.mustFail("cluster-wide create refused", "create", "epsilon", "--image", "tiny", "--size", "Standard_B1s", "--here")
		if !strings.Contains(r.stderr, "keep working") {
			t.Fatalf("no hint:\n%s", r.stderr)
		}
		if out := n2.must("list"); strings.Contains(out, "epsilon") {
			t.Fatalf("a refused create left a record:\n%s", out)
		}
		// Roles: changes are refused, the cached ones hold.
		n1.mustFail("role changes are refused", "role", "remove", ann.name, "contributor")
		if role, err := roleOn(n2, ann); err != nil || role != "contributor" {
			t.Fatalf("%s's cached role on %s with etcd down = %q, %v", ann.name, n2.name, role, err)
		}
		// A delete with etcd away is local; the name is released when the
		// host meets etcd again.
		n2.must("delete", "zeta", "--yes")
		for _, m := range e.Members {
			m.Restart(t)
		}
		e.WaitHealthy(t, 30*time.Second)
		within(t, 30*time.Second, func() error {
			list, err := n1.tryClusterList()
			if err != nil {
				return err
			}
			if got := list["beta@"+n2.name+"(up)"]; got != string(api.StateStopped) {
				return fmt.Errorf("beta seen as %q after etcd returned", got)
			}
			return nil
		})
		within(t, 30*time.Second, func() error {
			if r := n1.labvm("create", "zeta", "--image", "tiny", "--size", "Standard_B1s", "--here"); r.code != 0 {
				return fmt.Errorf("zeta not free yet: %s", r.stderr)
			}
			return nil
		})
	})

	n1.chapter(t, "a labvmd outside any cluster says so", func(t *testing.T) {
		solo := startDaemon(t, "--libvirt-uri", "test:///default", "--ready-probe", "none")
		r := solo.mustFail("not part of a cluster", "hosts")
		if !strings.Contains(r.stderr, "cluster:") {
			t.Fatalf("no hint how to join:\n%s", r.stderr)
		}
	})
}

// TestClusterPlacement is the story of a create that names no host: the
// cluster places it on the host that has the image and the most free
// cores, and labvm creates it there through the user's ssh, as the far
// user, whose role came from the cluster.
func TestClusterPlacement(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	p := "lvp" + randHex(3)
	sock := p + "sock"
	testGroup(t, sock)
	pat := remoteUser(t, p+"-pat", sock)
	h := startSSHD(t, pat)
	e := etcdtest.Start(t, 1)
	cl := "pl" + randHex(3)
	n1 := newClusterHost(t, e, cl, "n1-"+randHex(2), h.url(pat), "--socket-group", sock)
	n2 := newClusterHost(t, e, cl, "n2-"+randHex(2), h.url(pat), "--socket-group", sock)
	n1.must("role", "assign", pat.name, "contributor")
	n2.must("image", "import", "tiny", image)
	hasImage := func(host string) func() error {
		return func() error {
			if imgs := n1.hosts()[host].Images; !slices.Contains(imgs, "tiny") {
				return fmt.Errorf("%s publishes images %v", host, imgs)
			}
			return nil
		}
	}
	within(t, 10*time.Second, hasImage(n2.name))
	// The near side talks to n1 (its socket); only n2 has the image.
	fromN1 := func(args ...string) []string { return append([]string{"--socket", n1.socket}, args...) }

	n1.chapter(t, "placed on the only host with the image, created there through ssh as the far user", func(t *testing.T) {
		start := time.Now()
		r := h.near(t, fromN1("create", "placed1", "--size", "Standard_B1s", "--image", "tiny")...)
		t.Logf("create placed on another host, through ssh: %v", time.Since(start).Round(time.Millisecond))
		if r.code != 0 || !strings.Contains(r.stderr, "Placed on "+n2.name) {
			t.Fatalf("create without a host: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		var inst api.Instance
		n2.jsonOut(&inst, "show", "placed1")
		if inst.Owner != pat.name || inst.State != api.StateRunning {
			t.Fatalf("placed1 on %s = owner %s, %s; want %s's, Running", n2.name, inst.Owner, inst.State, pat.name)
		}
		if out := n1.must("list"); strings.Contains(out, "placed1") {
			t.Fatalf("placed1 is on %s too:\n%s", n1.name, out)
		}
		if left := h.sshLeft(); left != "" {
			t.Fatalf("ssh processes left:\n%s", left)
		}
	})

	n1.chapter(t, "with the image on both, the host with more free cores wins; --here pins", func(t *testing.T) {
		n1.must("image", "import", "tiny", image)
		within(t, 10*time.Second, hasImage(n1.name))
		within(t, 20*time.Second, func() error { // n2's cores held by placed1 are published
			if hs := n1.hosts(); hs[n2.name].CoresUsed != 1 {
				return fmt.Errorf("%s holds %d cores", n2.name, hs[n2.name].CoresUsed)
			}
			return nil
		})
		start := time.Now()
		r := h.near(t, fromN1("create", "placed2", "--size", "Standard_B1s", "--image", "tiny")...)
		t.Logf("create placed on this host: %v", time.Since(start).Round(time.Millisecond))
		if r.code != 0 || !strings.Contains(r.stderr, "Placed on "+n1.name+", this host") {
			t.Fatalf("create: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		n1.must("show", "placed2")
		// n1 now holds 1 core like n2; a tie on cores goes to the most
		// memory, which may be either: --here keeps it on n1 whatever.
		start = time.Now()
		n1.must("create", "placed3", "--size", "Standard_B1s", "--image", "tiny", "--here")
		t.Logf("create pinned here (no placement): %v", time.Since(start).Round(time.Millisecond))
		n1.must("show", "placed3")
	})

	n1.chapter(t, "no host with the image: the create says so, nothing is made", func(t *testing.T) {
		r := h.near(t, fromN1("create", "placed4", "--size", "Standard_B1s", "--image", "nope")...)
		if r.code == 0 || !strings.Contains(r.stderr, `has image "nope"`) || !strings.Contains(r.stderr, "Hint:") {
			t.Fatalf("create with an image nobody has: exit %d\n%s", r.code, r.stderr)
		}
		for _, n := range []*clusterHost{n1, n2} {
			if out := n.must("list"); strings.Contains(out, "placed4") {
				t.Fatalf("placed4 exists on %s", n.name)
			}
		}
	})
}

// TestClusterHostCutOff is the story of a host whose network is cut from
// etcd and comes back: a labvmd in its own network namespace, joined to
// the host (where etcd listens) by a veth pair. Cut off, it is lost to
// the others with its instances kept, serves its own instances and
// refuses creates; rejoined, it is up again and sees what happened
// meanwhile.
func TestClusterHostCutOff(t *testing.T) {
	image := requireHost(t)
	hostreq.RequireTool(t, "ip", "iproute2")
	id := randHex(3)
	ns, hostIf, nsIf := "lvn"+id, "lvh"+id, "lvi"+id
	sub := freeSubnet(t)
	hostIP := sub.Addr().Next()
	nsIP := hostIP.Next()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	run("ip", "addr", "add", hostIP.String()+"/24", "dev", hostIf)
	run("ip", "link", "set", hostIf, "up")
	run("ip", "netns", "exec", ns, "ip", "addr", "add", nsIP.String()+"/24", "dev", nsIf)
	run("ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up")
	run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

	e := etcdtest.StartOn(t, 1, net.IP(hostIP.AsSlice()))
	cl := "cut" + id
	n1 := newClusterHost(t, e, cl, "n1-"+id, "")
	far := newClusterHostIn(t, ns, e, cl, "ns-"+id, "")
	for _, h := range []*clusterHost{n1, far} {
		h.must("image", "import", "tiny", image)
	}
	far.must("create", "islander", "--image", "tiny", "--size", "Standard_B1s", "--here")
	within(t, 10*time.Second, func() error {
		list, err := n1.tryClusterList()
		if err == nil && list["islander@"+far.name+"(up)"] == "" {
			err = fmt.Errorf("islander not seen from %s: %v", n1.name, list)
		}
		return err
	})

	n1.chapter(t, "cut off: lost to the others, its instances kept; it serves its own and refuses creates", func(t *testing.T) {
		run("ip", "link", "set", hostIf, "down")
		within(t, 20*time.Second, func() error {
			if s := n1.hosts()[far.name].State; s != api.HostLost {
				return fmt.Errorf("%s is %q while cut off", far.name, s)
			}
			return nil
		})
		if _, ok := n1.clusterList()["islander@"+far.name+"(lost)"]; !ok {
			t.Fatalf("islander not listed on a lost host: %v", n1.clusterList())
		}
		far.must("stop", "islander")
		if out := far.must("list"); !strings.Contains(out, "islander") {
			t.Fatalf("local list while cut off:\n%s", out)
		}
		far.mustFail("cluster-wide create refused", "create", "castaway", "--image", "tiny", "--size", "Standard_B1s", "--here")
		n1.must("create", "mainland", "--image", "tiny", "--size", "Standard_B1s", "--here")
	})

	n1.chapter(t, "rejoined: up again, republished, and it sees what happened meanwhile", func(t *testing.T) {
		run("ip", "link", "set", hostIf, "up")
		within(t, 40*time.Second, func() error {
			if s := n1.hosts()[far.name].State; s != api.HostUp {
				return fmt.Errorf("%s is %q after rejoining", far.name, s)
			}
			list, err := n1.tryClusterList()
			if err == nil && list["islander@"+far.name+"(up)"] != string(api.StateStopped) {
				err = fmt.Errorf("islander seen as %v", list)
			}
			return err
		})
		within(t, 10*time.Second, func() error {
			list, err := far.tryClusterList()
			if err == nil && list["mainland@"+n1.name+"(up)"] == "" {
				err = fmt.Errorf("mainland not seen from %s: %v", far.name, list)
			}
			return err
		})
		far.must("create", "castaway", "--image", "tiny", "--size", "Standard_B1s", "--here")
	})
}
