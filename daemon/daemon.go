package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

// Hypervisor is what the lifecycle needs from libvirt. vm.Libvirt is the
// real one; keeping the interface here, at its consumer, keeps the
// daemon's view of libvirt to these few calls.
type Hypervisor interface {
	StartDomain(ctx context.Context, xml string) error
	Shutdown(ctx context.Context, name string) error
	WaitGone(ctx context.Context, name string) error
	Destroy(ctx context.Context, name string) error
	DomainState(ctx context.Context, name string) (vm.DomainStatus, error)
	OwnedDomains(ctx context.Context) ([]vm.OwnedDomain, error)
	AgentPing(ctx context.Context, name string) error
	Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error)
}

var _ Hypervisor = (*vm.Libvirt)(nil)

// HostNetwork is what the daemon needs from the host's networking;
// kernelNetwork (netlink, nftables) is the real one.
type HostNetwork interface {
	EnsureBridge(ctx context.Context, b network.Bridge) error
	DeleteBridge(ctx context.Context, name string) error
	ApplyFirewall(ctx context.Context, spec network.FirewallSpec) error
	EnableForwarding() error
	RoutesOverlapping(p netip.Prefix, exclude ...string) ([]string, error)
}

// Daemon is one labvmd.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	store    *store.Store
	hv       Hypervisor
	net      HostNetwork
	sizes    *vm.Catalogue
	images   *images.Catalogue
	accel    vm.Accel
	accelWhy string
	ops      *operations
	ready    *readiness
	// jobs is the in-memory side of the job queue (jobs.go).
	jobs *jobScheduler

	// netMu serialises host network changes (bridges, firewall).
	netMu sync.Mutex

	// doctorMu serialises doctor runs: a repair must not race a rebuild.
	doctorMu sync.Mutex

	// work owns every operation goroutine; Run waits for it before
	// returning so no goroutine outlives the daemon.
	work sync.WaitGroup
	// ctx is what operations run under: it ends ShutdownGrace after the
	// daemon starts stopping.
	ctx context.Context
	// stopping is closed when the daemon starts stopping; long waits
	// (readiness) give up at once and leave the rest to reconcile.
	stopping <-chan struct{}
	onStatus func(string)
}

// Options are what New needs besides the config.
type Options struct {
	Log *slog.Logger
	// Hypervisor overrides the libvirt connection (tests, benchmarks).
	Hypervisor Hypervisor
	// Network overrides the kernel's networking (unit tests).
	Network HostNetwork
	// Status receives a one-line summary whenever it changes (systemd's
	// STATUS=).
	Status func(string)
}

// New opens the store and connects to libvirt. It changes nothing on the
// host; Run does.
func New(ctx context.Context, cfg Config, opts Options) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	sizes, err := vm.NewCatalogue(vm.DefaultSizes(), cfg.Sizes)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	crash, err := parseCrashPoint(cfg.CrashAt)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, dir := range []string{cfg.DataDir, cfg.imagesDir(), cfg.instancesDir()} {
		// 0711: QEMU runs as libvirt-qemu and must traverse to the disks;
		// no other user may list them. Forced on every start, so a data dir
		// made by an older labvm is fixed too.
		if err := storage.EnsurePrivateDir(dir); err != nil {
			return nil, err
		}
	}
	// Older labvm made instance dirs 0755 and disks and seeds 0644.
	if err := storage.RestrictInstanceDirs(cfg.instancesDir()); err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.dbPath())
	if err != nil {
		return nil, err
	}
	hv := opts.Hypervisor
	if hv == nil {
		lv, err := vm.ConnectLibvirt(ctx, cfg.LibvirtURI)
		if err != nil {
			st.Close()
			return nil, err
		}
		hv = lv
	}
	hn := opts.Network
	if hn == nil {
		hn = kernelNetwork{}
	}
	accel, why := vm.ChooseAccel(cfg.Accel, vm.ReadHostFacts())
	d := &Daemon{
		cfg:      cfg,
		log:      log,
		store:    st,
		hv:       hv,
		net:      hn,
		sizes:    sizes,
		images:   images.New(cfg.imagesDir()),
		accel:    accel,
		accelWhy: why,
		ops:      newOperations(st, log),
		ready:    newReadiness(),
		jobs:     newJobScheduler(),
		onStatus: opts.Status,
	}
	d.ops.onAudit = d.audit
	d.ops.crash = crash
	if crash != nil {
		log.Warn("TEST-ONLY crash point armed: labvmd will SIGKILL itself there", "crash_at", crash.String())
	}
	return d, nil
}

// Run sets up the host side (bridge), reconciles, serves the API until ctx
// ends, then gives in-flight operations ShutdownGrace to reach a safe
// point before cancelling them. onReady is called once the daemon accepts
// calls (systemd's READY=1). ln may be a socket handed over by systemd;
// nil makes the daemon listen on cfg.SocketPath itself.
func (d *Daemon) Run(ctx context.Context, ln net.Listener, onReady func()) error {
	// Operations outlive ctx by up to ShutdownGrace: a create halfway
	// through writing its disk should finish rather than roll back.
	opsCtx, cancelOps := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOps()
	d.ctx = opsCtx
	d.stopping = ctx.Done()
	defer func() {
		grace := time.AfterFunc(d.cfg.ShutdownGrace, cancelOps)
		d.work.Wait()
		grace.Stop()
	}()

	if ln == nil {
		var err error
		if ln, err = listen(d.cfg.SocketPath, d.cfg.SocketGroup); err != nil {
			return err
		}
		// Only a socket we made is ours to remove; systemd's stays.
		defer os.Remove(d.cfg.SocketPath)
	}

	d.status("setting up VNets: bridges and firewall")
	if err := d.ensureDefaultVNet(); err != nil {
		ln.Close()
		return fmt.Errorf("default vnet: %w", err)
	}
	if err := d.syncNetworks(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("networks: %w", err)
	}
	d.status("reconciling instances with libvirt")
	if err := d.reconcile(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("reconcile: %w", err)
	}
	d.autostart()
	d.startPhoneHome(ctx)
	// Deferred after the wait for d.work, so it runs first.
	stopJobs := d.startJobs(ctx)
	defer stopJobs()
	d.log.Info("labvmd ready", "socket", d.cfg.SocketPath, "data_dir", d.cfg.DataDir,
		"accelerator", d.accel.String(), "why", d.accelWhy, "bridge", d.cfg.VNet.Bridge, "subnet", d.cfg.VNet.Subnet)
	if onReady != nil {
		onReady()
	}
	d.reportStatus()
	err := d.serveHTTP(ctx, ln)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if d.cfg.StopInstancesOnExit {
		d.log.Info("labvmd stopping: shutting instances down (host shutdown)", "bound", d.cfg.HostShutdownBound)
		d.shutdownInstances(d.ctx, d.cfg.HostShutdownBound)
	} else {
		d.log.Info("labvmd stopping; VMs keep running", "grace", d.cfg.ShutdownGrace)
	}
	return err
}

// status reports a one-line status (systemd's STATUS=).
func (d *Daemon) status(line string) {
	if d.onStatus != nil {
		d.onStatus(line)
	}
}

// reportStatus summarises the instances and operations in one line.
func (d *Daemon) reportStatus() {
	if d.onStatus == nil {
		return
	}
	list, err := d.instances()
	if err != nil {
		return
	}
	counts := map[vm.State]int{}
	for _, inst := range list {
		counts[inst.State]++
	}
	d.ops.mu.Lock()
	inFlight := len(d.ops.running)
	d.ops.mu.Unlock()
	d.status(fmt.Sprintf("%d instances: %d running, %d stopped, %d other; %d operations in flight",
		len(list), counts[vm.StateRunning], counts[vm.StateStopped], len(list)-counts[vm.StateRunning]-counts[vm.StateStopped], inFlight))
}

// Healthy proves the daemon can do its job: the store answers and libvirt
// is reachable. systemd's watchdog is fed only while it holds.
func (d *Daemon) Healthy(ctx context.Context) error {
	if err := d.store.View(func(tx *store.Tx) error { _, err := tx.Instances(); return err }); err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	if _, err := d.hv.OwnedDomains(ctx); err != nil {
		return fmt.Errorf("libvirt: %w", err)
	}
	return nil
}

// Close releases the store and the libvirt connection.
func (d *Daemon) Close() error {
	if c, ok := d.hv.(interface{ Close() error }); ok {
		c.Close()
	}
	return d.store.Close()
}

// goOp runs fn as an operation owned by the daemon.
func (d *Daemon) goOp(op *Op, fn func(ctx context.Context, op *Op) error) {
	d.work.Add(1)
	go func() {
		defer d.work.Done()
		err := fn(d.ctx, op)
		if err != nil {
			d.log.Warn("operation failed", "op", op.ID(), "error", err)
		}
		op.Finish(err)
		d.reportStatus()
	}()
}
