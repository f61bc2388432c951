// Package e2e tells labvm's user stories end to end: the real labvmd and
// labvm binaries, the real libvirtd and QEMU (TCG), real bridges, and the
// small test cloud image built by test/image.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/test/hostreq"
)

// binaries built once for the whole run.
var bins struct {
	dir     string
	labvm   string
	labvmd  string
	buildOK bool
}

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // every test skips (or fails under CI) by itself
		}
		dir, err := os.MkdirTemp("", "labvm-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = os.RemoveAll(dir) }()
		bins.dir = dir
		bins.labvm = filepath.Join(dir, "labvm")
		bins.labvmd = filepath.Join(dir, "labvmd")
		for _, b := range []struct{ out, pkg string }{{bins.labvm, "./cmd/labvm"}, {bins.labvmd, "./cmd/labvmd"}} {
			cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
			cmd.Dir = "../.."
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
				return 1
			}
		}
		bins.buildOK = true
		return m.Run()
	}()
	os.Exit(code)
}

// requireHost skips a test that needs root, libvirt and the test image,
// saying why; under CI=true a missing prerequisite fails instead, so
// coverage never silently vanishes.
func requireHost(t *testing.T) string {
	t.Helper()
	missing := func(why string) {
		t.Helper()
		hostreq.Require(t, false, "end-to-end test: "+why)
	}
	if testing.Short() {
		t.Skip("skipping end-to-end test in -short mode")
	}
	if os.Geteuid() != 0 {
		missing("needs root for libvirt, bridges and disks (run `sudo make test`)")
	}
	if !bins.buildOK {
		missing("labvm binaries were not built")
	}
	img := os.Getenv("LABVM_TEST_IMAGE")
	if img == "" {
		img, _ = filepath.Abs("../image/out/tiny.qcow2")
	}
	if _, err := os.Stat(img); err != nil {
		missing(fmt.Sprintf("test image %s not found (run `make image`)", img))
	}
	if err := exec.Command("virsh", "-c", "qemu:///system", "version").Run(); err != nil {
		missing("libvirtd is not reachable at qemu:///system (run `make host`)")
	}
	return img
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freeSubnet picks a /24 in 10.200.0.0/13 that no host route touches, so
// test networks never collide with the host's or another test's.
func freeSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	for i := 0; i < 100; i++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(8*256))
		v := int(n.Int64())
		p := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 200+v/256, v%256))
		over, err := network.RoutesOverlapping(p, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(over) == 0 {
			return p
		}
	}
	t.Fatal("no free /24 for a test subnet")
	return netip.Prefix{}
}

// labvmd is a private daemon with its own socket, data dir, bridge and
// subnet, so tests never touch a real installation on the same host.
type labvmd struct {
	t       *testing.T
	socket  string
	dataDir string
	bridge  string
	subnet  netip.Prefix
	// table and prefix keep this daemon's firewall and VNet bridges apart
	// from any other daemon's on the host.
	table, brPrefix string
	extra           []string
	// wrap runs labvmd under another program (systemd-socket-activate).
	wrap []string
	// env is added to labvmd's environment.
	env    []string
	cmd    *exec.Cmd
	logs   *bytes.Buffer
	exited chan struct{}
}

func startDaemon(t *testing.T, extraArgs ...string) *labvmd {
	t.Helper()
	d := newDaemon(t, extraArgs...)
	d.start()
	return d
}

// newDaemon prepares a private daemon without starting it.
func newDaemon(t *testing.T, extraArgs ...string) *labvmd {
	t.Helper()
	// /var/tmp, 0755: QEMU runs as libvirt-qemu and must reach the disks.
	dir, err := os.MkdirTemp("/var/tmp", "labvm-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	d := &labvmd{
		t:        t,
		socket:   filepath.Join(dir, "labvm.sock"),
		dataDir:  filepath.Join(dir, "data"),
		bridge:   "lve" + randHex(4),
		subnet:   freeSubnet(t),
		table:    "lvt_" + randHex(4),
		brPrefix: "lx" + randHex(2),
		extra:    extraArgs,
	}
	t.Cleanup(func() {
		d.kill()
		d.destroyOurDomains()
		_ = exec.Command("ip", "link", "del", d.bridge).Run()
		_ = network.RemoveFirewall(context.Background(), d.table)
		_ = network.FirewallRegistry{Dir: network.DefaultFirewallOwners}.Forget(d.table)
		for _, br := range d.vnetBridges() {
			_ = exec.Command("ip", "link", "del", br).Run()
		}
		if t.Failed() {
			t.Logf("labvmd log:\n%s", d.logs.String())
			for _, f := range mustGlob(filepath.Join(d.dataDir, "instances", "*", "console.log")) {
				b, _ := os.ReadFile(f)
				t.Logf("%s (last 3000 bytes):\n%s", f, tail(b, 3000))
			}
		}
		_ = os.RemoveAll(dir)
	})
	return d
}

func (d *labvmd) start() {
	d.t.Helper()
	args := append([]string{
		"--config", "/nonexistent",
		"--socket", d.socket, "--data-dir", d.dataDir,
		"--bridge", d.bridge, "--subnet", d.subnet.String(),
		"--accel", "tcg", "--phone-home-port", "0",
		"--ready-timeout", "3m", "--stop-timeout", "60s",
		"--firewall-table", d.table, "--bridge-prefix", d.brPrefix,
	}, d.extra...)
	if len(d.wrap) > 0 {
		d.cmd = exec.Command(d.wrap[0], append(append(d.wrap[1:len(d.wrap):len(d.wrap)], bins.labvmd), args...)...)
	} else {
		d.cmd = exec.Command(bins.labvmd, args...)
	}
	d.cmd.Env = append(os.Environ(), d.env...)
	if d.logs == nil {
		d.logs = &bytes.Buffer{}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(d.cmd, d.exited)
	c := client.New(d.socket)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.Info(context.Background()); err == nil {
			return
		}
		select {
		case <-d.exited:
			d.t.Fatalf("labvmd exited at start:\n%s", d.logs)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("labvmd not answering after 30s:\n%s", d.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the daemon gracefully (SIGTERM); VMs keep running.
func (d *labvmd) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Errorf("labvmd did not exit 30s after SIGTERM")
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

func (d *labvmd) kill() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.exited
	d.cmd = nil
}

// destroyOurDomains removes every domain whose disks live in this
// daemon's data dir, whatever state the test left them in.
func (d *labvmd) destroyOurDomains() {
	out, _ := exec.Command("virsh", "-c", "qemu:///system", "list", "--all", "--name").Output()
	for _, name := range strings.Fields(string(out)) {
		xml, _ := exec.Command("virsh", "-c", "qemu:///system", "dumpxml", name).Output()
		if bytes.Contains(xml, []byte(d.dataDir)) {
			_ = exec.Command("virsh", "-c", "qemu:///system", "destroy", name).Run()
			_ = exec.Command("virsh", "-c", "qemu:///system", "undefine", name).Run()
		}
	}
}

// chapter runs one chapter of a story as a subtest named by its text: a
// failure ends the chapter, not the story, so later chapters still report.
// While it runs, d's helpers (must, mustFail, …) fail the chapter rather
// than the story. Chapters run one at a time, never in parallel.
func (d *labvmd) chapter(t *testing.T, text string, f func(t *testing.T)) bool {
	t.Helper()
	return t.Run(text, func(ct *testing.T) {
		story := d.t
		d.t = ct
		defer func() { d.t = story }()
		f(ct)
	})
}

// result of one labvm command.
type result struct {
	stdout, stderr string
	code           int
}

// labvm runs the CLI against this daemon.
func (d *labvmd) labvm(args ...string) result {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.labvm, args...)
	cmd.Env = append(os.Environ(), d.cliEnv()...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("run labvm %v: %v", args, err)
	}
	return r
}

// cliEnv is what labvm run by root needs to talk to this daemon; its own
// config dir (labvm's known_hosts) stays in the daemon's directory rather
// than root's home.
func (d *labvmd) cliEnv() []string {
	return []string{"LABVM_SOCKET=" + d.socket, "XDG_CONFIG_HOME=" + d.configHome()}
}

// configHome is root's XDG_CONFIG_HOME for labvm commands of this test.
func (d *labvmd) configHome() string {
	return filepath.Join(filepath.Dir(d.socket), "config")
}

// must runs labvm and fails the test unless it exits 0.
func (d *labvmd) must(args ...string) string {
	d.t.Helper()
	r := d.labvm(args...)
	if r.code != 0 {
		d.t.Fatalf("labvm %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// mustFail runs labvm, expects a non-zero exit, and checks that stderr
// says what was wrong.
func (d *labvmd) mustFail(wantInStderr string, args ...string) result {
	d.t.Helper()
	r := d.labvm(args...)
	if r.code == 0 {
		d.t.Fatalf("labvm %s: succeeded, want failure\nstdout: %s", strings.Join(args, " "), r.stdout)
	}
	if !strings.Contains(r.stderr, wantInStderr) {
		d.t.Fatalf("labvm %s: stderr does not mention %q:\n%s", strings.Join(args, " "), wantInStderr, r.stderr)
	}
	// Progress lines may come first; the error is a line of its own.
	if !strings.HasPrefix(r.stderr, "Error: ") && !strings.Contains(r.stderr, "\nError: ") {
		d.t.Fatalf("labvm %s: stderr has no 'Error: ' line:\n%s", strings.Join(args, " "), r.stderr)
	}
	return r
}

func (d *labvmd) jsonOut(v any, args ...string) {
	d.t.Helper()
	out := d.must(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		d.t.Fatalf("labvm %v -o json: %v\n%s", args, err, out)
	}
}

func (d *labvmd) instanceDirs() []string {
	return mustGlob(filepath.Join(d.dataDir, "instances", "*"))
}

// domainsOf lists this daemon's libvirt domains.
func (d *labvmd) domains() []string {
	var ours []string
	out, _ := exec.Command("virsh", "-c", "qemu:///system", "list", "--all", "--name").Output()
	for _, name := range strings.Fields(string(out)) {
		xml, _ := exec.Command("virsh", "-c", "qemu:///system", "dumpxml", name).Output()
		if bytes.Contains(xml, []byte(d.dataDir)) {
			ours = append(ours, name)
		}
	}
	return ours
}

func mustGlob(p string) []string {
	m, _ := filepath.Glob(p)
	return m
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// qemuRunning reports whether a QEMU process for the domain exists.
func qemuRunning(domain string) bool {
	return exec.Command("pgrep", "-f", "guest="+domain+",").Run() == nil
}

func readSHA256(t *testing.T, image string) string {
	t.Helper()
	b, err := os.ReadFile(image + ".sha256")
	if err != nil {
		t.Fatalf("read checksum of the test image: %v", err)
	}
	return strings.Fields(string(b))[0]
}

// vnetBridges lists the bridges of VNets this daemon made.
func (d *labvmd) vnetBridges() []string {
	out, _ := exec.Command("ip", "-o", "link", "show", "type", "bridge").Output()
	var brs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
			if strings.HasPrefix(name, d.brPrefix) {
				brs = append(brs, name)
			}
		}
	}
	return brs
}
