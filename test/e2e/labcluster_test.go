package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/test/etcdtest"
	"github.com/labvm/labvm/test/hostreq"
)

// labLAN is the test's network between hosts: a bridge on the host's
// namespace (where etcd listens, on its address) and one network
// namespace per far host, each joined to the bridge by a veth pair whose
// host end can be set down to cut that namespace off.
type labLAN struct {
	hostIP netip.Addr
	ns     []string // the namespaces
	link   []string // the host end of each namespace's veth
}

// newLabLAN makes the bridge and n namespaces, removed when t ends.
func newLabLAN(t *testing.T, id string, n int) *labLAN {
	t.Helper()
	hostreq.RequireTool(t, "ip", "iproute2")
	sub := freeSubnet(t)
	l := &labLAN{hostIP: sub.Addr().Next()}
	br := "lvlb" + id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "link", "add", br, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", br).Run() })
	run("ip", "addr", "add", l.hostIP.String()+"/24", "dev", br)
	run("ip", "link", "set", br, "up")
	ip := l.hostIP
	for i := 0; i < n; i++ {
		ip = ip.Next()
		ns, hostIf, nsIf := fmt.Sprintf("lvln%s%d", id, i), fmt.Sprintf("lvlh%s%d", id, i), fmt.Sprintf("lvli%s%d", id, i)
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
		run("ip", "link", "set", hostIf, "master", br)
		run("ip", "link", "set", hostIf, "up")
		run("ip", "netns", "exec", ns, "ip", "addr", "add", ip.String()+"/24", "dev", nsIf)
		run("ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up")
		run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
		l.ns = append(l.ns, ns)
		l.link = append(l.link, hostIf)
	}
	return l
}

// setLink sets the host end of namespace i's link up or down.
func (l *labLAN) setLink(t *testing.T, i int, state string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "set", l.link[i], state).CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s %s: %v\n%s", l.link[i], state, err, out)
	}
}

// labChapter runs one chapter of the lab story with every host's helpers
// failing the chapter (not the story) while it runs.
func labChapter(t *testing.T, hosts []*clusterHost, text string, f func(t *testing.T)) bool {
	t.Helper()
	return t.Run(text, func(ct *testing.T) {
		for _, h := range hosts {
			story := h.t
			h.t = ct
			defer func() { h.t = story }()
		}
		f(ct)
	})
}

// TestLabCluster is the story of a lab of three hosts working as one
// place: three labvmd, two on the libvirt test driver in network
// namespaces of their own and one on QEMU with a real guest (in the
// host's namespace, where libvirtd's bridges are); a three-member etcd
// with mutual TLS; sshd with a real user's key. A user works on a host
// through `--host ssh://` (roles of the far user, create, exec, forward,
// open, ssh into the guest, contexts, ssh's own failures); names are
// unique and quota counts across hosts; a create without a host is
// placed on the host with the image and room; the lab lives through one
// etcd member killed, all of etcd stopped, a labvmd killed, and a
// namespace cut off and rejoined.
func TestLabCluster(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	began := time.Now()
	t.Cleanup(func() { t.Logf("lab story wall time: %v", time.Since(began).Round(time.Second)) })
	id := randHex(3)
	sock := "lvl" + id + "s"
	testGroup(t, sock)
	alice := remoteUser(t, "lvl"+id+"-alice", sock)
	nobody := remoteUser(t, "lvl"+id+"-nobody", sock)
	sshd := startSSHD(t, alice, nobody)
	lan := newLabLAN(t, id, 2)
	e := etcdtest.StartOn(t, 3, net.IP(lan.hostIP.AsSlice()))
	cl := "lab" + id
	q := newClusterHostIn(t, "", e, cl, "q-"+id, sshd.url(alice), "--socket-group", sock, "--libvirt-uri", "qemu:///system")
	a := newClusterHostIn(t, lan.ns[0], e, cl, "a-"+id, sshd.url(alice), "--socket-group", sock)
	b := newClusterHostIn(t, lan.ns[1], e, cl, "b-"+id, sshd.url(alice), "--socket-group", sock)
	all := []*clusterHost{q, a, b}
	chapter := func(text string, f func(t *testing.T)) bool { return labChapter(t, all, text, f) }
	q.must("image", "import", "tiny", image)
	q.must("role", "assign", alice.name, "contributor")
	far := []string{"--host", sshd.url(alice), "--socket", q.socket}
	key := filepath.Join(sshd.dir, "id")

	chapter("every host is up in `labvm hosts` with its capacity", func(t *testing.T) {
		within(t, 10*time.Second, func() error {
			if out := b.must("info"); !strings.Contains(out, "Cluster:     "+cl+", as host "+b.name+" (connected)") {
				return fmt.Errorf("info does not show the membership:\n%s", out)
			}
			hs := a.hosts()
			for _, h := range all {
				if x := hs[h.name]; x.State != api.HostUp || x.Cores == 0 || x.MemoryTotal == 0 || x.DiskFree == 0 {
					return fmt.Errorf("%s seen from %s as %+v", h.name, a.name, x)
				}
			}
			if !slices.Contains(hs[q.name].Images, "tiny") {
				return fmt.Errorf("%s publishes images %v", q.name, hs[q.name].Images)
			}
			return nil
		})
		if out := b.must("hosts"); !strings.Contains(out, "FREE CORES") || !strings.Contains(out, q.name) {
			t.Fatalf("labvm hosts table:\n%s", out)
		}
	})

	chapter("through ssh the far daemon sees the far user, whose cluster role decides", func(t *testing.T) {
		var w api.WhoAmI
		if err := json.Unmarshal([]byte(sshd.must(t, append(far, "whoami", "-o", "json")...)), &w); err != nil || w.User != alice.name || w.Role != "contributor" {
			t.Fatalf("whoami through ssh as %s = %+v, %v", alice.name, w, err)
		}
		asNobody := []string{"--host", sshd.url(nobody), "--socket", q.socket}
		r := sshd.mustFail(t, "computes/write", append(asNobody, "create", "nobody-dev", "--image", "tiny", "--size", "Standard_B1s", "--here")...)
		if !strings.Contains(r.stderr, nobody.name) && !strings.Contains(r.stderr, "role") {
			t.Fatalf("the refusal does not say who or why: %s", r.stderr)
		}
		if out := q.must("list", "-o", "json"); strings.Contains(out, "nobody-dev") {
			t.Fatalf("a refused create left an instance: %s", out)
		}
	})

	chapter("a real guest: create waits through ssh, then list, show and exec work there", func(t *testing.T) {
		start := time.Now()
		out := sshd.must(t, append(far, "create", "alice-far", "--image", "tiny", "--size", "Standard_B1s", "--ssh-key", key+".pub", "--here")...)
		t.Logf("create of a real guest through ssh: %v", time.Since(start).Round(time.Millisecond))
		if !strings.Contains(out, "Running") {
			t.Fatalf("create through ssh printed %q", out)
		}
		var inst api.Instance
		if err := json.Unmarshal([]byte(sshd.must(t, append(far, "show", "alice-far", "-o", "json")...)), &inst); err != nil || inst.Owner != alice.name || inst.State != api.StateRunning {
			t.Fatalf("show through ssh = %+v, %v", inst, err)
		}
		if out := sshd.must(t, append(far, "list")...); !strings.Contains(out, "alice-far") {
			t.Fatalf("list through ssh:\n%s", out)
		}
		if got := strings.TrimSpace(sshd.must(t, append(far, "exec", "alice-far", "--", "hostname")...)); got != "alice-far" {
			t.Fatalf("exec hostname through ssh printed %q", got)
		}
		if left := sshd.sshLeft(); left != "" {
			t.Fatalf("ssh processes left after the commands ended:\n%s", left)
		}
	})

	chapter("forward, open, tunnel and ssh into the guest through the far daemon", func(t *testing.T) {
		sshd.must(t, append(far, "exec", "alice-far", "--", "sh", "-c", "mkdir -p /tmp/www/tree && echo far > /tmp/www/index.html && echo notebook > /tmp/www/tree/index.html && busybox httpd -p 8888 -h /tmp/www")...)
		local := freeLocalPort(t)
		cmd := exec.Command(bins.labvm, append(far, "forward", "alice-far", strconv.Itoa(local)+":8888")...)
		cmd.Env = sshd.env()
		stop, _ := runUntilInterrupted(t, cmd, "Forwarding 127.0.0.1:", []string{"forward"})
		for i := 0; i < 3; i++ { // each connection is its own tunnel, its own ssh
			if body := httpGet(t, "http://127.0.0.1:"+strconv.Itoa(local)+"/"); body != "far\n" {
				t.Fatalf("GET through a forward over ssh = %q", body)
			}
		}
		stop()

		appPort := freeLocalPort(t)
		openCmd := exec.Command(bins.labvm, append(far, "open", "alice-far", "jupyter", "--port", strconv.Itoa(appPort))...)
		openCmd.Env = sshd.env()
		stopOpen, _ := runUntilInterrupted(t, openCmd, "jupyter of alice-far is at http://127.0.0.1:"+strconv.Itoa(appPort)+"/tree", []string{"open"})
		if body := httpGet(t, "http://127.0.0.1:"+strconv.Itoa(appPort)+"/tree/"); body != "notebook\n" {
			t.Fatalf("GET through labvm open over ssh = %q", body)
		}
		stopOpen()
		waitForPortRemote(t, sshd, far, "alice-far")

		// A tunnel is one ssh process for as long as it is open; end of
		// input reaches the guest as a half-close and ends it.
		tun := exec.Command(bins.labvm, append(far, "tunnel", "alice-far", "22")...)
		tun.Env = sshd.env()
		in, _ := tun.StdinPipe()
		outPipe, _ := tun.StdoutPipe()
		if err := tun.Start(); err != nil {
			t.Fatal(err)
		}
		banner := make([]byte, 4)
		if _, err := io.ReadFull(outPipe, banner); err != nil || string(banner) != "SSH-" {
			t.Fatalf("tunnel to port 22 through ssh read %q, %v", banner, err)
		}
		if out, _ := exec.Command("pgrep", "-f", "ssh -F '?"+sshd.sshCfg).Output(); len(out) == 0 {
			t.Fatal("no ssh process seen while a tunnel is open: the pattern cannot see them")
		}
		in.Close()
		go func() { _, _ = io.Copy(io.Discard, outPipe) }()
		tunDone := make(chan error, 1)
		go func() { tunDone <- tun.Wait() }()
		select {
		case err := <-tunDone:
			if err != nil {
				t.Fatalf("tunnel after its input ended: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = tun.Process.Kill()
			t.Fatal("tunnel still open 30s after its input ended")
		}
		out := sshd.must(t, append(far, "ssh", "alice-far", "--", "-i", key, "-o", "BatchMode=yes", "id -un; hostname")...)
		if got := strings.Fields(out); len(got) != 2 || got[1] != "alice-far" {
			t.Fatalf("labvm ssh through the far daemon printed %q", out)
		}
		if left := sshd.sshLeft(); left != "" {
			t.Fatalf("ssh processes left after forward and ssh ended:\n%s", left)
		}
	})

	chapter("a context names the far host; list marks the current one", func(t *testing.T) {
		sshd.must(t, "context", "add", "far", sshd.url(alice), "--socket", q.socket)
		sshd.mustFail(t, "exists", "context", "add", "far", sshd.url(alice))
		sshd.mustFail(t, "only ssh://", "context", "add", "bad", "http://x")
		sshd.must(t, "context", "use", "far")
		if out := sshd.must(t, "context", "list"); !regexp.MustCompile(`(?m)^\*\s+far\s`).MatchString(out) {
			t.Fatalf("context list does not mark far current:\n%s", out)
		}
		if out := sshd.must(t, "list"); !strings.Contains(out, "alice-far") {
			t.Fatalf("list in context far:\n%s", out)
		}
		if out := sshd.must(t, "info"); !strings.Contains(out, sshd.url(alice)) {
			t.Fatalf("info does not say it reached the far daemon:\n%s", out)
		}
		sshd.must(t, "context", "use", "default")
		if out := sshd.must(t, "context", "list"); !regexp.MustCompile(`(?m)^\*\s+default\s`).MatchString(out) {
			t.Fatalf("context list does not mark default current:\n%s", out)
		}
		if out := sshd.must(t, "--context", "far", "list"); !strings.Contains(out, "alice-far") {
			t.Fatalf("list --context far:\n%s", out)
		}
		sshd.must(t, "context", "remove", "far")
		sshd.mustFail(t, "no context named far", "--context", "far", "list")
	})

	chapter("ssh failures are shown with ssh's words and a hint; host keys are checked", func(t *testing.T) {
		r := sshd.mustFail(t, "Host key verification failed", "--host", fmt.Sprintf("ssh://%s@stranger:%d", alice.name, sshd.port), "--socket", q.socket, "list")
		if !strings.Contains(r.stderr, "Hint: check that `ssh") {
			t.Fatalf("no hint:\n%s", r.stderr)
		}
		closed := freeLocalPort(t)
		sshd.mustFail(t, "Connection refused", "--host", fmt.Sprintf("ssh://%s@127.0.0.1:%d", alice.name, closed), "list")
		sshd.mustFail(t, "no socket at /nonexistent.sock", "--host", sshd.url(alice), "--socket", "/nonexistent.sock", "list")
		sshd.mustFail(t, "password", "--host", "ssh://a:pw@127.0.0.1", "list")
	})

	// Placement: the near side talks to a (no image); q and b have it.
	b.must("image", "import", "tiny", image)
	hasImage := func(h *clusterHost) func() error {
		return func() error {
			if imgs := a.hosts()[h.name].Images; !slices.Contains(imgs, "tiny") {
				return fmt.Errorf("%s publishes images %v", h.name, imgs)
			}
			return nil
		}
	}
	fromA := func(args ...string) []string { return append([]string{"--socket", a.socket}, args...) }

	chapter("placed on the host with the image and the most free cores, created there through ssh as the far user", func(t *testing.T) {
		within(t, 10*time.Second, hasImage(b))
		within(t, 20*time.Second, func() error { // q's core held by alice-far is published
			if hs := a.hosts(); hs[q.name].CoresUsed != 1 {
				return fmt.Errorf("%s holds %d cores", q.name, hs[q.name].CoresUsed)
			}
			return nil
		})
		start := time.Now()
		r := sshd.near(t, fromA("create", "placed1", "--size", "Standard_B1s", "--image", "tiny")...)
		t.Logf("create placed on another host, through ssh: %v", time.Since(start).Round(time.Millisecond))
		if r.code != 0 || !strings.Contains(r.stderr, "Placed on "+b.name) {
			t.Fatalf("create without a host: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		var inst api.Instance
		b.jsonOut(&inst, "show", "placed1")
		if inst.Owner != alice.name || inst.State != api.StateRunning {
			t.Fatalf("placed1 on %s = owner %s, %s; want %s's, Running", b.name, inst.Owner, inst.State, alice.name)
		}
		for _, h := range []*clusterHost{q, a} {
			if out := h.must("list"); strings.Contains(out, "placed1") {
				t.Fatalf("placed1 is on %s too:\n%s", h.name, out)
			}
		}
		if left := sshd.sshLeft(); left != "" {
			t.Fatalf("ssh processes left:\n%s", left)
		}
	})

	chapter("with the image here too and more free cores, placed on this host; --here pins", func(t *testing.T) {
		a.must("image", "import", "tiny", image)
		within(t, 10*time.Second, hasImage(a))
		within(t, 20*time.Second, func() error {
			if hs := a.hosts(); hs[b.name].CoresUsed != 1 {
				return fmt.Errorf("%s holds %d cores", b.name, hs[b.name].CoresUsed)
			}
			return nil
		})
		start := time.Now()
		r := sshd.near(t, fromA("create", "placed2", "--size", "Standard_B1s", "--image", "tiny")...)
		t.Logf("create placed on this host: %v", time.Since(start).Round(time.Millisecond))
		if r.code != 0 || !strings.Contains(r.stderr, "Placed on "+a.name+", this host") {
			t.Fatalf("create: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		a.must("show", "placed2")
		a.must("create", "placed3", "--size", "Standard_B1s", "--image", "tiny", "--here")
		a.must("show", "placed3")
	})

	chapter("no host with the image: the create says so, nothing is made", func(t *testing.T) {
		r := sshd.near(t, fromA("create", "placed4", "--size", "Standard_B1s", "--image", "nope")...)
		if r.code == 0 || !strings.Contains(r.stderr, `has image "nope"`) || !strings.Contains(r.stderr, "Hint:") {
			t.Fatalf("create with an image nobody has: exit %d\n%s", r.code, r.stderr)
		}
		for _, h := range all {
			if out := h.must("list"); strings.Contains(out, "placed4") {
				t.Fatalf("placed4 exists on %s", h.name)
			}
		}
	})

	chapter("every host lists every instance with its host; a stop is published", func(t *testing.T) {
		want := fmt.Sprintf("map[alice-far@%s(up):Running placed1@%s(up):Running placed2@%s(up):Running placed3@%s(up):Running]", q.name, b.name, a.name, a.name)
		within(t, 10*time.Second, func() error {
			if got := fmt.Sprint(b.clusterList()); got != want {
				return fmt.Errorf("list --cluster on %s = %s, want %s", b.name, got, want)
			}
			return nil
		})
		table := q.must("list", "--cluster")
		if !strings.HasPrefix(table, "NAME") || !strings.Contains(strings.SplitN(table, "\n", 2)[0], "HOST") || !strings.Contains(table, b.name) {
			t.Fatalf("list --cluster table:\n%s", table)
		}
		a.must("stop", "placed3")
		within(t, 10*time.Second, func() error {
			if got := q.clusterList()["placed3@"+a.name+"(up)"]; got != string(api.StateStopped) {
				return fmt.Errorf("placed3 seen as %q from %s", got, q.name)
			}
			return nil
		})
	})

	chapter("the same name is refused on a second host", func(t *testing.T) {
		r := b.mustFail("already exists in cluster "+cl+" (on host "+q.name, "create", "alice-far", "--image", "tiny", "--size", "Standard_B1s", "--here")
		if !strings.Contains(r.stderr, "Hint:") {
			t.Fatalf("no hint:\n%s", r.stderr)
		}
		if out := b.must("list"); strings.Contains(out, "alice-far") {
			t.Fatalf("a refused create left a record on %s:\n%s", b.name, out)
		}
	})

	chapter("the quota counts every host; a delete gives cores back", func(t *testing.T) {
		a.must("quota", "set", "--cluster", "--family", "standardBSFamily", "5")
		// alice-far (q) + placed1 (b) + placed2, placed3 (a): 4 of 5.
		r := b.mustFail("quota of family standardBSFamily exceeded: 4 of 5 cores used across its hosts", "create", "gamma", "--image", "tiny", "--size", "Standard_B2s", "--here")
		if !strings.Contains(r.stderr, "list --cluster") {
			t.Fatalf("the hint does not point at the cluster:\n%s", r.stderr)
		}
		a.must("create", "gamma", "--image", "tiny", "--size", "Standard_B1s", "--here")
		var qu api.Quota
		q.jsonOut(&qu, "quota", "--cluster", "-o", "json")
		if qu.Total.Used != 5 {
			t.Fatalf("quota --cluster = %+v; want 5 cores used", qu)
		}
		b.mustFail("quota", "create", "delta", "--image", "tiny", "--size", "Standard_B1s", "--here")
		a.must("delete", "gamma", "--yes")
		b.must("create", "delta", "--image", "tiny", "--size", "Standard_B1s", "--here")
		b.must("delete", "delta", "--yes")
		a.must("quota", "set", "--cluster", "--family", "standardBSFamily", "0")
	})

	roleOn := func(h *clusterHost, u unixUser) (string, error) {
		r := h.as(u, "whoami", "-o", "json")
		var w api.WhoAmI
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &w) != nil {
			return "", fmt.Errorf("whoami as %s on %s: exit %d: %s", u.name, h.name, r.code, r.stderr)
		}
		return w.Role, nil
	}

	chapter("a role given on one host holds on every host", func(t *testing.T) {
		if role, err := roleOn(b, nobody); err != nil || role != "none" {
			t.Fatalf("%s's role on %s before = %q, %v", nobody.name, b.name, role, err)
		}
		a.must("role", "assign", nobody.name, "contributor")
		within(t, 10*time.Second, func() error {
			role, err := roleOn(b, nobody)
			if err == nil && role != "contributor" {
				err = fmt.Errorf("%s is %q on %s", nobody.name, role, b.name)
			}
			return err
		})
		if out := q.must("role", "list"); !strings.Contains(out, nobody.name) {
			t.Fatalf("role list on %s:\n%s", q.name, out)
		}
	})

	chapter("a labvmd killed: its host is lost, its instances kept; it comes back", func(t *testing.T) {
		a.kill()
		within(t, 15*time.Second, func() error {
			if s := b.hosts()[a.name].State; s != api.HostLost {
				return fmt.Errorf("%s is %q after a kill", a.name, s)
			}
			if _, ok := b.clusterList()["placed2@"+a.name+"(lost)"]; !ok {
				return fmt.Errorf("placed2 not listed on lost %s: %v", a.name, b.clusterList())
			}
			return nil
		})
		if out := q.must("list", "--cluster"); !strings.Contains(out, a.name+" (lost)") {
			t.Fatalf("the table does not say the host is lost:\n%s", out)
		}
		a.start()
		within(t, 15*time.Second, func() error {
			if s := b.hosts()[a.name].State; s != api.HostUp {
				return fmt.Errorf("%s is %q after its restart", a.name, s)
			}
			if _, ok := b.clusterList()["placed2@"+a.name+"(up)"]; !ok {
				return fmt.Errorf("placed2 not listed on %s after its restart: %v", a.name, b.clusterList())
			}
			return nil
		})
	})

	chapter("one etcd member of three killed: everything works", func(t *testing.T) {
		e.Members[0].Kill()
		within(t, 20*time.Second, func() error {
			if r := a.labvm("create", "eta", "--image", "tiny", "--size", "Standard_B1s", "--here"); r.code != 0 {
				return fmt.Errorf("create with a member down: %s", r.stderr)
			}
			return nil
		})
		b.mustFail("already exists in cluster", "create", "eta", "--image", "tiny", "--size", "Standard_B1s", "--here")
		within(t, 10*time.Second, func() error {
			list, err := q.tryClusterList()
			if err == nil && list["eta@"+a.name+"(up)"] == "" {
				err = fmt.Errorf("eta not listed from %s: %v", q.name, list)
			}
			return err
		})
		a.must("delete", "eta", "--yes")
		e.Members[0].Restart(t)
		e.WaitHealthy(t, 30*time.Second)
	})

	chapter("all of etcd stopped: local work goes on, creates and cluster reads are refused clearly; all republished after", func(t *testing.T) {
		b.must("create", "zeta", "--image", "tiny", "--size", "Standard_B1s", "--here")
		for _, m := range e.Members {
			m.Kill()
		}
		within(t, 15*time.Second, func() error {
			if out := b.must("info"); !strings.Contains(out, "not connected to etcd") {
				return fmt.Errorf("info with etcd down:\n%s", out)
			}
			return nil
		})
		r := b.mustFail("cluster registry", "hosts")
		if !strings.Contains(r.stderr, "Hint:") || !strings.Contains(r.stderr, "without --cluster") {
			t.Fatalf("no hint:\n%s", r.stderr)
		}
		b.mustFail("unreachable", "list", "--cluster")
		if out := b.must("list"); !strings.Contains(out, "placed1") {
			t.Fatalf("local list with etcd down:\n%s", out)
		}
		b.must("stop", "placed1")
		b.must("start", "placed1")
		b.must("stop", "placed1")
		if got := strings.TrimSpace(sshd.must(t, append(far, "exec", "alice-far", "--", "hostname")...)); got != "alice-far" {
			t.Fatalf("exec in the real guest through ssh with etcd down printed %q", got)
		}
		r = b.mustFail("cluster-wide create refused", "create", "epsilon", "--image", "tiny", "--size", "Standard_B1s", "--here")
		if !strings.Contains(r.stderr, "keep working") {
			t.Fatalf("no hint:\n%s", r.stderr)
		}
		if out := b.must("list"); strings.Contains(out, "epsilon") {
			t.Fatalf("a refused create left a record:\n%s", out)
		}
		// Roles: changes are refused, the cached ones hold.
		a.mustFail("role changes are refused", "role", "remove", nobody.name, "contributor")
		if role, err := roleOn(b, nobody); err != nil || role != "contributor" {
			t.Fatalf("%s's cached role on %s with etcd down = %q, %v", nobody.name, b.name, role, err)
		}
		// A delete with etcd away is local; the name is released when the
		// host meets etcd again.
		b.must("delete", "zeta", "--yes")
		for _, m := range e.Members {
			m.Restart(t)
		}
		e.WaitHealthy(t, 30*time.Second)
		within(t, 30*time.Second, func() error {
			list, err := a.tryClusterList()
			if err != nil {
				return err
			}
			if got := list["placed1@"+b.name+"(up)"]; got != string(api.StateStopped) {
				return fmt.Errorf("placed1 seen as %q after etcd returned", got)
			}
			return nil
		})
		within(t, 30*time.Second, func() error {
			if r := a.labvm("create", "zeta", "--image", "tiny", "--size", "Standard_B1s", "--here"); r.code != 0 {
				return fmt.Errorf("zeta not free yet: %s", r.stderr)
			}
			return nil
		})
	})

	chapter("a namespace cut off: lost to the others, its instances kept; it serves its own and refuses creates", func(t *testing.T) {
		lan.setLink(t, 1, "down")
		within(t, 20*time.Second, func() error {
			if s := a.hosts()[b.name].State; s != api.HostLost {
				return fmt.Errorf("%s is %q while cut off", b.name, s)
			}
			return nil
		})
		if _, ok := q.clusterList()["placed1@"+b.name+"(lost)"]; !ok {
			t.Fatalf("placed1 not listed on a lost host: %v", q.clusterList())
		}
		b.must("start", "placed1")
		if out := b.must("list"); !strings.Contains(out, "placed1") {
			t.Fatalf("local list while cut off:\n%s", out)
		}
		b.mustFail("cluster-wide create refused", "create", "castaway", "--image", "tiny", "--size", "Standard_B1s", "--here")
		a.must("create", "mainland", "--image", "tiny", "--size", "Standard_B1s", "--here")
	})

	chapter("the namespace rejoined: up again, republished, and it sees what happened meanwhile", func(t *testing.T) {
		lan.setLink(t, 1, "up")
		within(t, 40*time.Second, func() error {
			if s := a.hosts()[b.name].State; s != api.HostUp {
				return fmt.Errorf("%s is %q after rejoining", b.name, s)
			}
			list, err := a.tryClusterList()
			if err == nil && list["placed1@"+b.name+"(up)"] != string(api.StateRunning) {
				err = fmt.Errorf("placed1 seen as %v", list)
			}
			return err
		})
		within(t, 10*time.Second, func() error {
			list, err := b.tryClusterList()
			if err == nil && list["mainland@"+a.name+"(up)"] == "" {
				err = fmt.Errorf("mainland not seen from %s: %v", b.name, list)
			}
			return err
		})
		b.must("create", "castaway", "--image", "tiny", "--size", "Standard_B1s", "--here")
	})

	chapter("a labvmd outside any cluster says so", func(t *testing.T) {
		solo := startDaemon(t, "--libvirt-uri", "test:///default", "--ready-probe", "none")
		r := solo.mustFail("not part of a cluster", "hosts")
		if !strings.Contains(r.stderr, "cluster:") {
			t.Fatalf("no hint how to join:\n%s", r.stderr)
		}
	})

	chapter("delete through ssh releases the name across the cluster", func(t *testing.T) {
		sshd.must(t, append(far, "delete", "alice-far", "--yes")...)
		if out := q.must("list"); strings.Contains(out, "alice-far") {
			t.Fatalf("alice-far still listed after delete through ssh:\n%s", out)
		}
		if left := sshd.sshLeft(); left != "" {
			t.Fatalf("ssh processes left:\n%s", left)
		}
		b.must("create", "alice-far", "--image", "tiny", "--size", "Standard_B1s", "--here")
	})
}
