// Command labvm-bench measures labvm on the real libvirtd and QEMU and
// writes docs/BENCHMARKS.md: create latency against its floor and against
// virt-install, the lifecycle with a real guest, scale with libvirt's test
// driver, and host disk per instance. `make bench` runs it.
//
// Everything it makes is named lvbench-… (data dir under /var/tmp, bridges
// lvb…, libvirt domains lvbench-… or labvm-lvbench-…) and is removed on exit,
// on failure and on SIGINT/SIGTERM.
//
// It is the one place outside package vm that calls libvirt, on purpose: the
// floor it measures must not go through labvm's own code, and it must find
// and undefine the persistent domains virt-install leaves behind.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/network"
	"libvirt.org/go/libvirt"
)

type options struct {
	labvm, labvmd string
	image         string
	out           string
	size          string
	creates       int
	lifecycle     int
	pairs         int
	scale         int
	parallel      int
	cmdRuns       int
	skipQEMU      bool
	skipScale     bool
	skipCluster   bool
	cluster       int
	skipCopy      bool
	copyMiB       int
	copyRuns      int
	only          string
	scaleURI      string
	profileDir    string
	dsImage       string
	dsSize        string
	dsOut         string
}

func main() {
	var o options
	flag.StringVar(&o.labvm, "labvm", "bin/labvm", "labvm CLI binary")
	flag.StringVar(&o.labvmd, "labvmd", "bin/labvmd", "labvmd binary")
	flag.StringVar(&o.image, "image", "", "test cloud image (default test/image/out/tiny.qcow2, else /tmp/img/tiny.qcow2)")
	flag.StringVar(&o.out, "out", "docs/BENCHMARKS.md", "report to write (empty: stdout only)")
	flag.StringVar(&o.size, "size", "Standard_B1s", "instance size for every create")
	flag.IntVar(&o.creates, "creates", 20, "control-plane creates (and floor runs) on QEMU")
	flag.IntVar(&o.lifecycle, "lifecycle", 5, "create/stop/start/delete cycles with a booting guest")
	flag.IntVar(&o.pairs, "pairs", 10, "labvm create vs virt-install pairs")
	flag.IntVar(&o.scale, "scale", 10000, "instances created on the test driver (a /16 holds them)")
	flag.IntVar(&o.parallel, "parallel", 20, "parallel creates on the test driver")
	flag.IntVar(&o.cmdRuns, "cmd-runs", 20, "runs of each `labvm list`/`labvm show` timing")
	flag.BoolVar(&o.skipQEMU, "skip-qemu", false, "skip the figures that boot QEMU")
	flag.BoolVar(&o.skipScale, "skip-scale", false, "skip the test-driver scale figures")
	flag.IntVar(&o.cluster, "cluster", 1000, "instances per host of the three-host cluster figures (test driver, a real etcd)")
	flag.BoolVar(&o.skipCluster, "skip-cluster", false, "skip the cluster figures (they need etcd: apt-get install etcd-server)")
	flag.BoolVar(&o.skipCopy, "skip-copy", false, "skip the copy throughput figures (labvm cp against ssh)")
	flag.IntVar(&o.copyMiB, "copy-mib", 64, "size of the file copied in and out, MiB (ssh moves ~1 MB/s under TCG)")
	flag.IntVar(&o.copyRuns, "copy-runs", 3, "copies each way, for labvm cp and for ssh")
	flag.StringVar(&o.only, "only", "", "run only this part: qemu, scale, copy or cluster (the report then has only its figures; -skip-* say the same)")
	flag.StringVar(&o.scaleURI, "scale-uri", "test+unix:///default", "libvirt URI of the scale figures' simulated hypervisor: libvirtd's test driver by default, so the simulated domains live outside labvmd as real ones do (test:///default runs them inside labvmd, where 10,000 of them take ~105 MB of its RSS)")
	flag.StringVar(&o.profileDir, "profile", "", "instead of the benchmark, profile an in-process daemon on the test driver (create, list, show) and write cpu.pprof and heap.pprof here")
	flag.StringVar(&o.dsImage, "ds-image", "", "also boot this data-science image (`make ds-image`: images/out/ds-debian-12.qcow2) through labvm and as a plain domain, and write that section to -ds-out")
	flag.StringVar(&o.dsSize, "ds-size", "Standard_B2s", "instance size for the data-science image's boots")
	flag.StringVar(&o.dsOut, "ds-out", "docs/BENCHMARKS-ds.md", "where the data-science image's section goes (empty: stdout only)")
	flag.Parse()
	if o.only != "" {
		parts := map[string]*bool{"qemu": &o.skipQEMU, "scale": &o.skipScale, "copy": &o.skipCopy, "cluster": &o.skipCluster}
		if _, known := parts[o.only]; !known {
			fmt.Fprintf(os.Stderr, "labvm-bench: -only %q: use qemu, scale, copy or cluster\n", o.only)
			os.Exit(2)
		}
		for name, skip := range parts {
			*skip = name != o.only
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "labvm-bench: %v\n", err)
		os.Exit(1)
	}
}

// env is one benchmark run: its work dir, its id and everything to undo.
type env struct {
	o         options
	id        string // random, in every name
	work      string
	image     string
	mu        sync.Mutex
	undo      []func()
	cleaning  bool
	cleanOnce sync.Once
	logf      func(format string, args ...any)
	lv        *libvirt.Connect
	report    *report
}

// onCleanup registers f to undo something about to be made. Register
// before making it: once cleanup has begun (SIGINT), onCleanup never
// returns, so nothing new is made behind the cleanup's back.
func (e *env) onCleanup(f func()) {
	e.mu.Lock()
	if e.cleaning {
		e.mu.Unlock()
		select {} // the signal handler exits the process
	}
	e.undo = append(e.undo, f)
	e.mu.Unlock()
}

// cleanup undoes everything, once; a second caller (the deferred one in
// run while SIGINT's is under way) waits for the first to finish.
func (e *env) cleanup() {
	e.cleanOnce.Do(func() {
		e.mu.Lock()
		e.cleaning = true
		undo := e.undo
		e.undo = nil
		e.mu.Unlock()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	})
}

func run(o options) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: labvm-bench starts labvmd, bridges and QEMU domains")
	}
	for _, p := range []*string{&o.labvm, &o.labvmd} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%s: %w (run `make build` first)", abs, err)
		}
		*p = abs
	}
	if o.image == "" {
		o.image = "test/image/out/tiny.qcow2"
		if _, err := os.Stat(o.image); err != nil {
			o.image = "/tmp/img/tiny.qcow2"
		}
	}
	img, err := filepath.Abs(o.image)
	if err != nil {
		return err
	}
	if _, err := os.Stat(img); err != nil {
		return fmt.Errorf("test image: %w (run `make image`)", err)
	}

	if o.profileDir != "" {
		o.image = img
		return profile(o)
	}

	e := &env{o: o, id: randHex(3), image: img, report: newReport(o)}
	e.logf = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	// /var/tmp and 0755: QEMU runs as libvirt-qemu and must reach the disks.
	e.work, err = os.MkdirTemp("/var/tmp", "lvbench-")
	if err != nil {
		return err
	}
	_ = os.Chmod(e.work, 0o755)
	e.onCleanup(func() { _ = os.RemoveAll(e.work) })

	// SIGINT/SIGTERM: undo everything, then exit.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigc
		e.logf("%s: cleaning up", s)
		e.cleanup()
		os.Exit(130)
	}()
	defer e.cleanup()

	e.lv, err = libvirt.NewConnect("qemu:///system")
	if err != nil {
		return fmt.Errorf("libvirt: %w (is libvirtd running? `make host`)", err)
	}
	e.onCleanup(func() { e.lv.Close() })
	// Registered after the connection, so it runs before it closes.
	e.onCleanup(e.removeOurDomains)

	e.report.machine = machineInfo(e.lv)
	start := time.Now()
	if !o.skipQEMU {
		if err := e.qemuFigures(); err != nil {
			return err
		}
	}
	if !o.skipCopy {
		if err := e.copyFigures(); err != nil {
			return err
		}
	}
	if !o.skipScale {
		if err := e.scaleFigures(); err != nil {
			return err
		}
	}
	if !o.skipCluster {
		if err := e.clusterFigures(); err != nil {
			return err
		}
	}
	if o.dsImage != "" {
		if o.dsImage, err = filepath.Abs(o.dsImage); err != nil {
			return err
		}
		e.o.dsImage = o.dsImage
		if err := e.dsFigures(); err != nil {
			return err
		}
		md := "# labvm benchmarks: the data-science image\n\n" +
			"Written by `cmd/labvm-bench -ds-image` (`sudo make bench` runs it when `make ds-image` has built the image).\n" +
			"Load average at the end: " + loadavg() + ".\n\n" + e.report.ds.markdown()
		fmt.Print(md)
		if o.dsOut != "" {
			if err := os.WriteFile(o.dsOut, []byte(md), 0o644); err != nil {
				return err
			}
			e.logf("wrote %s", o.dsOut)
		}
		if o.skipQEMU && o.skipScale && o.skipCopy && o.skipCluster {
			return nil
		}
	}
	e.report.took = time.Since(start)
	md := e.report.markdown()
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return err
		}
		e.logf("wrote %s", o.out)
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// removeOurDomains destroys (and undefines) every domain that is this
// run's: named lvbench-<id>-…, or with a disk in the work dir.
func (e *env) removeOurDomains() {
	doms, err := e.lv.ListAllDomains(0)
	if err != nil {
		e.logf("cleanup: list domains: %v", err)
		return
	}
	for _, d := range doms {
		name, _ := d.GetName()
		xml, _ := d.GetXMLDesc(0)
		if strings.HasPrefix(name, "lvbench-"+e.id+"-") || strings.Contains(xml, e.work+"/") {
			e.removeDomain(&d, xml)
		}
		d.Free()
	}
}

// removeDomain destroys and undefines d and removes the cloud-init ISO
// virt-install left in libvirt's boot dir for it.
func (e *env) removeDomain(d *libvirt.Domain, xml string) {
	if active, _ := d.IsActive(); active {
		_ = d.Destroy()
	}
	if persistent, _ := d.IsPersistent(); persistent {
		_ = d.UndefineFlags(libvirt.DOMAIN_UNDEFINE_NVRAM | libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE)
	}
	for _, f := range virtinstISOs(xml) {
		_ = os.Remove(f)
	}
}

// virtinstISOs finds the cloud-init seeds virt-install made for a domain.
func virtinstISOs(xml string) []string {
	var out []string
	for _, part := range strings.Split(xml, "'") {
		if strings.HasPrefix(part, "/var/lib/libvirt/boot/virtinst-") && strings.HasSuffix(part, "cloudinit.iso") {
			out = append(out, part)
		}
	}
	return out
}

// freeSubnet picks a prefix of the given size in 10.200.0.0/13 that no
// host route touches, so the bench never collides with the host's
// networks or another labvm.
func freeSubnet(bits int) (netip.Prefix, error) {
	for i := 0; i < 200; i++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(8*256))
		v := int(n.Int64())
		p, err := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/%d", 200+v/256, v%256, bits)).Addr().Prefix(bits)
		if err != nil {
			return p, err
		}
		over, err := network.RoutesOverlapping(p, "")
		if err != nil {
			return p, err
		}
		if len(over) == 0 {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("no free subnet in 10.200.0.0/13")
}

// daemonProc is a private labvmd: its own socket, data dir, bridge and
// subnet.
type daemonProc struct {
	e       *env
	dir     string
	socket  string
	dataDir string
	bridge  string
	subnet  netip.Prefix
	cmd     *exec.Cmd
	log     *os.File
	exited  chan struct{}
	c       *client.Client
}

func (e *env) startDaemon(kind string, subnetBits int, extra ...string) (*daemonProc, error) {
	subnet, err := freeSubnet(subnetBits)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.work, kind)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &daemonProc{
		e: e, dir: dir,
		socket:  filepath.Join(dir, "labvm.sock"),
		dataDir: filepath.Join(dir, "data"),
		bridge:  "lvb" + kind[:1] + e.id,
		subnet:  subnet,
	}
	// Its own firewall table: the default one belongs to a real labvmd.
	table := "lvbench_" + kind[:1] + e.id
	e.onCleanup(func() {
		_ = exec.Command("ip", "link", "del", d.bridge).Run()
		_ = network.RemoveFirewall(context.Background(), table)
		_ = network.FirewallRegistry{Dir: network.DefaultFirewallOwners}.Forget(table)
	})
	if d.log, err = os.Create(filepath.Join(dir, "labvmd.log")); err != nil {
		return nil, err
	}
	args := append([]string{
		"--config", "/nonexistent",
		"--socket", d.socket, "--data-dir", d.dataDir,
		"--bridge", d.bridge, "--subnet", subnet.String(),
		"--accel", "tcg", "--phone-home-port", "0",
		"--ready-timeout", "3m", "--stop-timeout", "60s",
		"--firewall-table", table, "--bridge-prefix", "lvx" + kind[:1],
	}, extra...)
	d.cmd = exec.Command(e.o.labvmd, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	e.onCleanup(d.stop)
	d.c = client.New(d.socket)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := d.c.Info(context.Background()); err == nil {
			break
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("labvmd (%s) exited at start:\n%s", kind, d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("labvmd (%s) not answering after 30s:\n%s", kind, d.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.logf("labvmd %s up (pid %d, bridge %s, subnet %s)", kind, d.cmd.Process.Pid, d.bridge, subnet)
	return d, nil
}

func (d *daemonProc) logTail() string {
	b, _ := os.ReadFile(d.log.Name())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop ends the daemon (SIGTERM, then SIGKILL after 20 s).
func (d *daemonProc) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// importImage imports the test image and returns the stored base's path.
func (d *daemonProc) importImage(path string) (string, error) {
	ctx := context.Background()
	op, err := d.c.ImportImageFile(ctx, api.ImportImageRequest{Name: "tiny"}, path)
	if err != nil {
		return "", err
	}
	if _, err := d.c.Wait(ctx, op.ID, nil); err != nil {
		return "", fmt.Errorf("import %s: %w", path, err)
	}
	img, err := d.c.Image(ctx, "tiny")
	if err != nil {
		return "", err
	}
	base := filepath.Join(d.dataDir, "images", img.Digest+".qcow2")
	if _, err := os.Stat(base); err != nil {
		return "", fmt.Errorf("imported image not where expected: %w", err)
	}
	return base, nil
}

// cli runs the labvm CLI against d and returns its stdout.
func (d *daemonProc) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.e.o.labvm, args...)
	cmd.Env = append(os.Environ(), "LABVM_SOCKET="+d.socket)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("labvm %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// timedCLI runs the CLI and returns the wall time of the whole command.
func (d *daemonProc) timedCLI(args ...string) (time.Duration, error) {
	t0 := time.Now()
	_, err := d.cli(args...)
	return time.Since(t0), err
}

// rss is the daemon's resident memory (VmRSS) in bytes.
func (d *daemonProc) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb int64
			_, _ = fmt.Sscan(f[1], &kb) // unparsable: 0, as when the file is missing
			return kb << 10
		}
	}
	return 0
}
