package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/network"
)

// TestOneHostManyUsers is the shared host seen by its attackers: alice and
// bob each have an instance on the default VNet; bob's guest (root inside)
// takes alice's address, forges its MAC, answers DHCP and scans the VNet;
// mallory, a local user with no role, reads the data dir and floods the
// socket and the audit log; a re-created account named bob comes back for
// the old bob's instance. Each attack must fail for the attacker and leave
// alice's tunnel, exec and list working. The figures (attempts, bytes, how
// long alice waited) are in the test output.
func TestOneHostManyUsers(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	p := "lvi" + randHex(3)
	sock := p + "sock"
	testGroup(t, sock)
	alice := testUser(t, p+"-alice", sock)
	bob := testUser(t, p+"-bob", sock)
	mallory := testUser(t, p+"-mal", sock)

	d := startDaemon(t, "--socket-group", sock)
	d.must("image", "import", "tiny", image)
	d.must("role", "assign", alice.name, "contributor")
	d.must("role", "assign", bob.name, "contributor")

	ok := func(r result) string {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
		return r.stdout
	}
	ok(d.as(alice, "create", "alice-dev", "--image", "tiny", "--size", "Standard_B1s"))
	ok(d.as(bob, "create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s"))
	aliceVM, bobVM := d.showInstance("alice-dev"), d.showInstance("bob-dev")
	aliceIP, bobIP := netip.MustParseAddr(aliceVM.IP), netip.MustParseAddr(bobVM.IP)
	for _, u := range []struct {
		who  unixUser
		name string
	}{{alice, "alice-dev"}, {bob, "bob-dev"}} {
		ok(d.as(u.who, "exec", u.name, "--", "sh", "-c",
			fmt.Sprintf("mkdir -p /tmp/www && echo hello-from-%s > /tmp/www/index.html && busybox httpd -p 8080 -h /tmp/www", u.name)))
	}
	nic := strings.TrimSpace(ok(d.as(bob, "exec", "bob-dev", "--", "sh", "-c",
		fmt.Sprintf("ip -o -4 addr show | awk '/ %s\\// {print $2}'", bobIP))))
	if nic == "" {
		t.Fatal("cannot find bob-dev's NIC")
	}

	// aliceReachesHerOwn fetches alice's page through the daemon's tunnel,
	// as alice, n times, and counts the answers that came from alice-dev.
	aliceReachesHerOwn := func(n int) int {
		t.Helper()
		got := 0
		for i := 0; i < n; i++ {
			body := d.asWithInput(alice, "GET / HTTP/1.0\r\n\r\n", "tunnel", "alice-dev", "8080")
			if strings.Contains(body.stdout, "hello-from-alice-dev") {
				got++
			} else if strings.Contains(body.stdout, "hello-from-bob-dev") {
				t.Errorf("alice's tunnel landed in bob's guest")
			}
		}
		return got
	}
	if n := aliceReachesHerOwn(1); n != 1 {
		t.Fatal("positive control: alice does not reach her own page through the tunnel")
	}

	t.Run("a guest cannot take over another guest's address", func(t *testing.T) {
		const claims = 10
		ok(d.as(bob, "exec", "bob-dev", "--", "sh", "-c", fmt.Sprintf(
			"ip addr add %s/%d dev %s; arping -U -c %d -w 3 -I %s %s; arping -A -c %d -w 3 -I %s %s; true",
			aliceIP, d.subnet.Bits(), nic, claims, nic, aliceIP, claims, nic, aliceIP)))
		reached := aliceReachesHerOwn(5)
		t.Logf("bob's guest sent %d gratuitous ARP requests and %d ARP replies claiming %s; alice then reached her own guest %d/5 times",
			claims, claims, aliceIP, reached)
		if reached != 5 {
			t.Fatalf("alice reached her own guest %d/5 times after the ARP attack", reached)
		}
		neigh, _ := exec.Command("ip", "neigh", "show", aliceIP.String()).CombinedOutput()
		if strings.Contains(string(neigh), strings.ToLower(bobVM.MAC)) {
			t.Fatalf("the host's neighbour entry for %s points at bob's guest: %s", aliceIP, neigh)
		}
		ok(d.as(bob, "exec", "bob-dev", "--", "sh", "-c", fmt.Sprintf("ip addr del %s/%d dev %s; true", aliceIP, d.subnet.Bits(), nic)))
	})

	t.Run("a guest cannot forge its MAC", func(t *testing.T) {
		forged := "52:54:00:de:ad:01"
		gw := network.Gateway(d.subnet).String()
		// The host answers ARP for its gateway address: a guest whose frames
		// pass resolves it, one whose frames are dropped does not.
		r := d.as(bob, "exec", "bob-dev", "--", "sh", "-c", fmt.Sprintf(
			"ip link set %s address %s && arping -c 3 -w 4 -I %s %s; rc=$?; ip link set %s address %s; exit $rc",
			nic, forged, nic, gw, nic, strings.ToLower(bobVM.MAC)))
		t.Logf("bob's guest with MAC %s asked for its gateway's MAC 3 times: exit %d", forged, r.code)
		if r.code == 0 {
			t.Fatalf("frames from a forged MAC reached the host:\n%s", r.stdout)
		}
		control := d.as(bob, "exec", "bob-dev", "--", "arping", "-c", "1", "-w", "3", "-I", nic, gw)
		if control.code != 0 {
			t.Fatalf("positive control: bob's guest with its own MAC cannot resolve its gateway:\n%s%s", control.stdout, control.stderr)
		}
	})

	t.Run("guests on the default VNet do not reach each other", func(t *testing.T) {
		r := d.as(bob, "exec", "bob-dev", "--", "sh", "-c",
			fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 8080`, aliceIP))
		if strings.Contains(r.stdout, "hello-from-alice-dev") {
			t.Fatal("bob's guest read alice's web page directly")
		}
		// A scan of the neighbouring addresses finds nothing open.
		var probes []string
		for a, i := aliceIP.Prev().Prev(), 0; i < 5; a, i = a.Next(), i+1 {
			if a == bobIP {
				continue
			}
			for _, port := range []int{22, 8080} {
				probes = append(probes, fmt.Sprintf("nc -z -w 1 %s %d && echo OPEN %s:%d", a, port, a, port))
			}
		}
		scan := d.as(bob, "exec", "bob-dev", "--", "sh", "-c", strings.Join(probes, "; ")+"; true")
		t.Logf("bob's guest probed %d address:port pairs on its VNet; open: %q", len(probes), strings.TrimSpace(scan.stdout))
		if strings.Contains(scan.stdout, "OPEN") {
			t.Fatalf("bob's guest found open ports on its neighbours:\n%s", scan.stdout)
		}
	})

	t.Run("a guest that answers DHCP gives no one a lease", func(t *testing.T) {
		ok(d.as(bob, "exec", "bob-dev", "--", "sh", "-c", fmt.Sprintf(
			"mkdir -p /var/lib/misc && touch /var/lib/misc/udhcpd.leases && printf 'start %s\nend %s\ninterface %s\noption router %s\n' > /tmp/udhcpd.conf && udhcpd /tmp/udhcpd.conf",
			aliceIP.Next().Next(), aliceIP.Next().Next().Next(), nic, bobIP)))
		aliceNIC := strings.TrimSpace(ok(d.as(alice, "exec", "alice-dev", "--", "sh", "-c",
			fmt.Sprintf("ip -o -4 addr show | awk '/ %s\\// {print $2}'", aliceIP))))
		r := d.as(alice, "exec", "alice-dev", "--", "udhcpc", "-i", aliceNIC, "-n", "-q", "-t", "3", "-T", "1", "-s", "/bin/true")
		t.Logf("alice's guest asked for a lease 3 times while bob's guest ran a DHCP server: exit %d", r.code)
		if r.code == 0 || strings.Contains(r.stdout+r.stderr, "lease of") {
			t.Fatalf("alice's guest got a lease from bob's guest:\n%s%s", r.stdout, r.stderr)
		}
		if n := aliceReachesHerOwn(1); n != 1 {
			t.Fatal("alice lost her guest after the DHCP attack")
		}
	})

	t.Run("a local user reads no instance file", func(t *testing.T) {
		inst := filepath.Join(d.dataDir, "instances", aliceVM.ID)
		targets := []string{filepath.Join(inst, "disk.qcow2"), filepath.Join(inst, "seed.iso"), filepath.Join(inst, "manifest.json"),
			filepath.Join(inst, "console.log")}
		for _, f := range targets {
			if out, err := runAs(mallory, "cat", f); err == nil {
				t.Errorf("mallory read %s (%d bytes)", f, len(out))
			}
		}
		for _, dir := range []string{d.dataDir, filepath.Join(d.dataDir, "instances"), inst, filepath.Join(d.dataDir, "images")} {
			if out, err := runAs(mallory, "ls", dir); err == nil {
				t.Errorf("mallory listed %s: %s", dir, out)
			}
		}
	})

	t.Run("a user with no role cannot flood the audit log or the socket", func(t *testing.T) {
		dbBefore := fileSize(t, filepath.Join(d.dataDir, "labvm.db"))
		const floods = 2000
		long := strings.Repeat("x", 64<<10)
		// Under /var/tmp: mallory must read it, and t.TempDir's parent is
		// root's alone.
		cfgDir, err := os.MkdirTemp("/var/tmp", "labvm-e2e-flood-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(cfgDir) })
		cfg := filepath.Join(cfgDir, "curl.cfg")
		var b strings.Builder
		for i := 0; i < floods; i++ {
			fmt.Fprintf(&b, "url = \"http://labvmd/v1/instances/%s%%1b[2J%d\"\n-X DELETE\n-o /dev/null\n", long[:200], i)
		}
		if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(cfgDir, 0o755); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, err := runAs(mallory, "curl", "-s", "-g", "--unix-socket", d.socket, "-K", cfg)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("curl as mallory: %v\n%s", err, out)
		}
		t.Logf("mallory sent %d refused deletes with 200-byte names in %s", floods, took.Round(time.Millisecond))

		var entries []api.AuditEntry
		d.jsonOut(&entries, "audit", "--caller", mallory.name)
		denied, suppressed := 0, 0
		for _, e := range entries {
			switch e.Outcome {
			case "denied":
				denied++
				if len(e.Target) > 130 {
					t.Errorf("audit target of %d bytes kept", len(e.Target))
				}
			case "suppressed":
				suppressed++
			}
		}
		var all []api.AuditEntry
		d.jsonOut(&all, "audit", "--instance", "alice-dev")
		t.Logf("audit: %d of mallory's refusals recorded one by one, %d summaries; alice-dev's %d entries kept; database %d → %d bytes",
			denied, suppressed, len(all), dbBefore, fileSize(t, filepath.Join(d.dataDir, "labvm.db")))
		if denied == 0 || denied > 40 {
			t.Fatalf("%d refusals recorded one by one; want a bounded few", denied)
		}
		if len(all) == 0 {
			t.Fatal("alice's entries were evicted by mallory's flood")
		}
		if grown := fileSize(t, filepath.Join(d.dataDir, "labvm.db")) - dbBefore; grown > 4<<20 {
			t.Fatalf("the database grew by %d bytes under a flood of refused calls", grown)
		}
		if r := d.labvm("audit", "--caller", mallory.name); strings.ContainsRune(r.stdout, 0x1b) {
			t.Fatal("labvm audit printed a raw escape sequence from a caller-chosen name")
		}

		// Hold many connections open, sending a header and never the body.
		hold := exec.Command("setpriv", "--reuid="+strconv.Itoa(mallory.uid), "--regid="+strconv.Itoa(mallory.gid), "--init-groups",
			"/usr/bin/python3", "-c", connectionHog, d.socket, "200")
		hogOut := &bytesBuffer{}
		hold.Stdout, hold.Stderr = hogOut, hogOut
		if err := hold.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = hold.Process.Kill(); _ = hold.Wait() })
		waitFor(t, 20*time.Second, "mallory's connections to open", func() bool { return strings.Contains(hogOut.String(), "holding") })
		start = time.Now()
		r := d.as(alice, "list")
		waited := time.Since(start)
		t.Logf("mallory %s; alice's `labvm list` meanwhile answered in %s", strings.TrimSpace(hogOut.String()), waited.Round(time.Millisecond))
		if r.code != 0 || !strings.Contains(r.stdout, "alice-dev") {
			t.Fatalf("alice's list failed during the flood:\n%s%s", r.stdout, r.stderr)
		}
		if !strings.Contains(hogOut.String(), "refused") {
			t.Fatalf("mallory held every connection she asked for: %s", hogOut.String())
		}
	})

	t.Run("a re-created account does not inherit the old one's instance", func(t *testing.T) {
		if out, err := exec.Command("userdel", bob.name).CombinedOutput(); err != nil {
			t.Fatalf("userdel: %v\n%s", err, out)
		}
		newBob := bob
		newBob.uid = bob.uid + 7
		if out, err := exec.Command("useradd", "--no-create-home", "--no-user-group", "--gid", strconv.Itoa(bob.gid),
			"--uid", strconv.Itoa(newBob.uid), "--shell", "/usr/sbin/nologin", bob.name).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v\n%s", err, out)
		}
		r := d.as(newBob, "exec", "bob-dev", "--", "true")
		if r.code == 0 {
			t.Fatal("the new account named bob used the old bob's instance")
		}
		if r := d.as(newBob, "list"); strings.Contains(r.stdout, "bob-dev") {
			t.Fatalf("the new account named bob lists the old bob's instance:\n%s", r.stdout)
		}
		if r := d.as(newBob, "create", "x-dev", "--image", "tiny", "--size", "Standard_B1s"); r.code == 0 {
			t.Fatal("the new account named bob holds the old bob's contributor role")
		}
	})

	if n := aliceReachesHerOwn(3); n != 3 {
		t.Fatalf("after every attack alice reached her guest %d/3 times", n)
	}
}

// connectionHog opens N connections to a Unix socket, sends half a
// request header, and holds them.
const connectionHog = `
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
held, refused = [], 0
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        s.sendall(b"POST /v1/instances HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        s.settimeout(0.05)
        if s.recv(64).startswith(b"HTTP/1.1 429"):
            refused += 1
            s.close()
            continue
    except socket.timeout:
        pass
    except OSError:
        # closed by the daemon before we could even send: refused too
        refused += 1
        s.close()
        continue
    held.append(s)
print("holding %d connections, %d refused" % (len(held), refused), flush=True)
time.sleep(60)
`

// runAs runs a command as u and returns its combined output.
func runAs(u unixUser, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups", name}, args...)
	out, err := exec.CommandContext(ctx, "setpriv", full...).CombinedOutput()
	return string(out), err
}

// asWithInput runs labvm as u with stdin.
func (d *labvmd) asWithInput(u unixUser, stdin string, args ...string) result {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups", bins.labvm}, args...)
	cmd := exec.CommandContext(ctx, "setpriv", full...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LABVM_SOCKET=" + d.socket, "HOME=/nonexistent"}
	cmd.Stdin = strings.NewReader(stdin)
	out, errb := &bytesBuffer{}, &bytesBuffer{}
	cmd.Stdout, cmd.Stderr = out, errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	}
	return r
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
