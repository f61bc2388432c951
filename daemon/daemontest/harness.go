// Package daemontest runs a labvmd inside a unit test: the real daemon,
// store, operations and API on a temp socket, with a fake hypervisor and a
// fake host network, so the daemon's own logic is tested without root.
// The end-to-end tests in test/e2e use the real libvirt and kernel.
package daemontest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
)

// FakeHypervisor stands in for libvirt in these unit tests of the
// daemon's own logic; the end-to-end tests use the real one.
type FakeHypervisor struct {
	mu      sync.Mutex
	domains map[string]string // name → instance id
	// StartErr, when set, makes StartDomain fail.
	StartErr error
	// StartGate, when set, blocks StartDomain until closed.
	StartGate chan struct{}
	// stats are what DomainStats reports for a running domain, by name.
	stats map[string]vm.DomainStats
	// down makes OwnedDomains, ActiveDomainNames and DomainStats fail as
	// with libvirtd gone.
	down bool
	// namesCalls counts ActiveDomainNames calls; afterList runs after
	// each (SetAfterList).
	namesCalls int
	afterList  func(names map[string]bool)
}

var _ daemon.Hypervisor = (*FakeHypervisor)(nil)

var (
	nameRe = regexp.MustCompile(`<name>([^<]+)</name>`)
	idRe   = regexp.MustCompile(`<labvm:id>([^<]+)</labvm:id>`)
)

func NewFakeHypervisor() *FakeHypervisor {
	return &FakeHypervisor{domains: map[string]string{}, stats: map[string]vm.DomainStats{}}
}

func (f *FakeHypervisor) StartDomain(ctx context.Context, xml string) error {
	f.mu.Lock()
	gate, err := f.StartGate, f.StartErr
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	name := nameRe.FindStringSubmatch(xml)[1]
	id := ""
	if m := idRe.FindStringSubmatch(xml); m != nil {
		id = m[1]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.domains[name]; ok {
		return fmt.Errorf("domain %s already running", name)
	}
	f.domains[name] = id
	return nil
}

func (f *FakeHypervisor) Shutdown(ctx context.Context, name string) error {
	return f.Destroy(ctx, name)
}
func (f *FakeHypervisor) WaitGone(ctx context.Context, name string) error { return nil }

func (f *FakeHypervisor) Destroy(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.domains, name)
	return nil
}

func (f *FakeHypervisor) DomainState(ctx context.Context, name string) (vm.DomainStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.domains[name]; ok {
		return vm.DomainRunning, nil
	}
	return vm.DomainAbsent, nil
}

func (f *FakeHypervisor) OwnedDomains(ctx context.Context) ([]vm.OwnedDomain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, fmt.Errorf("fake libvirtd is down: %w", vm.ErrUnavailable)
	}
	var out []vm.OwnedDomain
	for name, id := range f.domains {
		out = append(out, vm.OwnedDomain{Name: name, InstanceID: id, Status: vm.DomainRunning})
	}
	return out, nil
}

// ActiveDomainNames lists the running domains' names; it fails like
// OwnedDomains while SetDown holds, and counts its calls (NamesCalls).
func (f *FakeHypervisor) ActiveDomainNames(ctx context.Context) (map[string]bool, error) {
	f.mu.Lock()
	f.namesCalls++
	if f.down {
		f.mu.Unlock()
		return nil, fmt.Errorf("fake libvirtd is down: %w", vm.ErrUnavailable)
	}
	out := make(map[string]bool, len(f.domains))
	for name := range f.domains {
		out[name] = true
	}
	after := f.afterList
	f.mu.Unlock()
	if after != nil {
		after(out)
	}
	return out, nil
}

// SetAfterList makes fn run after each ActiveDomainNames has made its
// list and before it returns it: a test does there what may happen
// between the guest watcher's look and its action.
func (f *FakeHypervisor) SetAfterList(fn func(names map[string]bool)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.afterList = fn
}

// NamesCalls counts the ActiveDomainNames calls so far.
func (f *FakeHypervisor) NamesCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.namesCalls
}

func (f *FakeHypervisor) AgentPing(ctx context.Context, name string) error {
	if st, _ := f.DomainState(ctx, name); st != vm.DomainRunning {
		return vm.ErrAgentUnavailable
	}
	return nil
}

func (f *FakeHypervisor) Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error) {
	return vm.ExecResult{Stdout: []byte(strings.Join(append([]string{req.Path}, req.Args...), " "))}, nil
}

// DomainStats reports each running domain with the counters SetStats
// gave it (none by default), sorted by name like the driver's.
func (f *FakeHypervisor) DomainStats(ctx context.Context) ([]vm.DomainStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, fmt.Errorf("fake libvirtd is down: %w", vm.ErrUnavailable)
	}
	var out []vm.DomainStats
	for name, id := range f.domains {
		s := f.stats[name]
		s.Name, s.InstanceID = name, id
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SetStats sets the counters DomainStats reports for a domain.
func (f *FakeHypervisor) SetStats(domain string, s vm.DomainStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats[domain] = s
}

// SetDown makes libvirt look gone (true) or back (false) to OwnedDomains,
// ActiveDomainNames and DomainStats.
func (f *FakeHypervisor) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Running counts the domains that run.
func (f *FakeHypervisor) Running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.domains)
}

// FakeNetwork records what the daemon asks of the host's networking.
type FakeNetwork struct {
	mu       sync.Mutex
	bridges  map[string]network.Bridge
	firewall network.FirewallSpec
	// routes are host routes RoutesOverlapping reports.
	routes []netip.Prefix
}

func NewFakeNetwork() *FakeNetwork { return &FakeNetwork{bridges: map[string]network.Bridge{}} }

func (f *FakeNetwork) EnsureBridge(ctx context.Context, b network.Bridge) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bridges[b.Name] = b
	return nil
}

func (f *FakeNetwork) DeleteBridge(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.bridges, name)
	return nil
}

func (f *FakeNetwork) ApplyFirewall(ctx context.Context, spec network.FirewallSpec) error {
	if _, err := network.BuildFirewall(spec); err != nil && len(spec.VNets) > 0 {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.firewall = spec
	return nil
}

func (f *FakeNetwork) EnableForwarding() error { return nil }

func (f *FakeNetwork) RoutesOverlapping(p netip.Prefix, exclude ...string) ([]string, error) {
	var out []string
	for _, r := range f.routes {
		if r.Overlaps(p) {
			out = append(out, r.String())
		}
	}
	return out, nil
}

// Daemon is a labvmd running in the test, on a socket in a temp dir.
type Daemon struct {
	*daemon.Daemon
	HV       *FakeHypervisor
	Net      *FakeNetwork
	Client   *client.Client
	Cfg      daemon.Config
	Paths    lifecycle.Paths
	cancel   context.CancelFunc
	Done     chan error
	stopOnce sync.Once
	stopErr  error
}

// New starts a daemon on hv with the "tiny" image recorded, after seed
// has written whatever else the test needs into the store.
func New(t testing.TB, hv daemon.Hypervisor, seed func(tx *store.Tx) error) *Daemon {
	return NewAt(t, t.TempDir(), hv, nil, seed)
}

// NewWith is New with a chance to change the config first.
func NewWith(t testing.TB, hv daemon.Hypervisor, configure func(*daemon.Config), seed func(tx *store.Tx) error) *Daemon {
	return NewAt(t, t.TempDir(), hv, configure, seed)
}

// NewAt runs a daemon on dir; a second one on the same dir (after Stop)
// is the same labvmd restarted.
func NewAt(t testing.TB, dir string, hv daemon.Hypervisor, configure func(*daemon.Config), seed func(tx *store.Tx) error) *Daemon {
	t.Helper()
	return NewAtWith(t, dir, hv, daemon.Options{}, configure, seed)
}

// NewAtWith is NewAt with options (a policy clock); its log, hypervisor
// and network are the harness's.
func NewAtWith(t testing.TB, dir string, hv daemon.Hypervisor, opts daemon.Options, configure func(*daemon.Config), seed func(tx *store.Tx) error) *Daemon {
	t.Helper()
	cfg := daemon.DefaultConfig()
	cfg.SocketPath = filepath.Join(dir, "labvm.sock")
	cfg.SocketGroup = ""
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.PhoneHomePort = 0
	cfg.ReadyTimeout = 5 * time.Second
	cfg.Accel = vm.AccelForceTCG
	if configure != nil {
		configure(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fn := NewFakeNetwork()
	fn.routes = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	opts.Log, opts.Hypervisor, opts.Network = log, hv, fn
	d, err := daemon.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(cfg.DataDir, "images", "base.qcow2")
	if _, err := os.Stat(base); err != nil {
		if err := os.WriteFile(base, []byte("not really qcow2; the fake hypervisor never reads it"), 0o444); err != nil {
			t.Fatal(err)
		}
		if err := d.Store().Update(func(tx *store.Tx) error {
			if err := ownerUnlessRoot(tx); err != nil {
				return err
			}
			return tx.CreateImage(store.Image{Name: "tiny", Digest: strings.Repeat("a", 64), Path: base, VirtualSize: 512 << 20})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if seed != nil {
		if err := d.Store().Update(seed); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	td := &Daemon{Daemon: d, Net: fn, Client: client.New(cfg.SocketPath), Cfg: cfg, Paths: lifecycle.Paths{DataDir: cfg.DataDir}, cancel: cancel, Done: make(chan error, 1)}
	td.HV, _ = hv.(*FakeHypervisor)
	ready := make(chan struct{})
	go func() { td.Done <- d.Run(ctx, nil, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-td.Done:
		t.Fatalf("daemon exited: %v", err)
	}
	t.Cleanup(func() {
		if err := td.Stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return td
}

// ownerUnlessRoot makes the test's own user an owner when it is not root.
// Tests run as root (make test) call the daemon as root, an owner by
// nature; a plain `go test ./...` by another user must read the same, so
// that user gets the owner role root has without one.
func ownerUnlessRoot(tx *store.Tx) error {
	uid := os.Getuid()
	if uid == 0 {
		return nil
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return fmt.Errorf("look up the test's user: %w", err)
	}
	return tx.PutRole(store.RoleAssignment{Principal: u.Username, UID: &uid, Role: "owner", AssignedBy: "daemontest", AssignedAt: time.Now().UTC()})
}

// Stop ends the daemon and returns Run's result (tests of restarts); it
// may be called more than once.
func (td *Daemon) Stop() error {
	td.stopOnce.Do(func() {
		td.cancel()
		td.stopErr = <-td.Done
		// Best effort, as in a test cleanup: a store left open shows up
		// as the next New on this data dir failing on bbolt's lock.
		_ = td.Daemon.Close()
	})
	return td.stopErr
}

// Create creates an instance and waits for its operation.
func (td *Daemon) Create(t testing.TB, req api.CreateInstanceRequest) (api.Operation, error) {
	t.Helper()
	ctx := context.Background()
	op, err := td.Client.CreateInstance(ctx, req)
	if err != nil {
		return op, err
	}
	return td.Client.Wait(ctx, op.ID, nil)
}

// TinyReq is a create of the recorded "tiny" image.
func TinyReq(name string) api.CreateInstanceRequest {
	return api.CreateInstanceRequest{Name: name, Size: "Standard_B1s", Image: "tiny"}
}

// AddDomain makes the fake hypervisor run a domain no instance made.
func (f *FakeHypervisor) AddDomain(name, instanceID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.domains[name] = instanceID
}

// WaitState polls the instance until it is in want and returns it; the
// test fails after 10 s with the state and reason it saw last.
func WaitState(t *testing.T, c *client.Client, name string, want api.InstanceState) api.Instance {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		inst, err := c.Instance(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if inst.State == want {
			return inst
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %s (%s) after 10s, want %s", name, inst.State, inst.StateReason, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
