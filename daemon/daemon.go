package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/labvm/labvm/daemon/audit"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/datasets"
	"github.com/labvm/labvm/daemon/doctor"
	"github.com/labvm/labvm/daemon/httpapi"
	"github.com/labvm/labvm/daemon/jobs"
	"github.com/labvm/labvm/daemon/library"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/metrics"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/daemon/vnets"
	"github.com/labvm/labvm/images"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
	vmlibvirt "github.com/labvm/labvm/vm/libvirt"
)

// Hypervisor is what labvmd needs from libvirt: the lifecycle's calls;
// jobs, the console and doctor use more of the same driver when it has
// them (jobs.Runner, lifecycle.ConsoleOpener).
type Hypervisor interface {
	lifecycle.Hypervisor
}

// HostNetwork is the host's networking as VNets need it.
type HostNetwork = vnets.HostNetwork

// Daemon is one labvmd.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	store    *store.Store
	hv       Hypervisor
	ops      *ops.Engine
	audit    *audit.Log
	vnets    *vnets.Engine
	jobs     *jobs.Engine
	lc       *lifecycle.Engine
	datasets *datasets.Engine
	api      *httpapi.Server
	metrics  *metrics.Metrics
	onStatus func(string)
	// statusKick asks for the status line to be recomputed.
	statusKick chan struct{}
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
	crash, err := ops.ParseCrashPoint(cfg.CrashAt)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := prepareDataDir(cfg); err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.dbPath())
	if err != nil {
		return nil, err
	}
	hv := opts.Hypervisor
	if hv == nil {
		lv, err := vmlibvirt.Connect(ctx, cfg.LibvirtURI)
		if err != nil {
			// The connect error is the one to report; what the store
			// committed is on disk whether or not Close succeeds.
			_ = st.Close()
			return nil, err
		}
		hv = lv
	}
	hn := opts.Network
	if hn == nil {
		hn = vnets.Kernel{}
	}
	accel, why := vm.ChooseAccel(cfg.Accel, vm.ReadHostFacts())
	d := &Daemon{cfg: cfg, log: log, store: st, hv: hv, onStatus: opts.Status, statusKick: make(chan struct{}, 1)}
	d.audit = audit.New(st, log)
	d.metrics = metrics.New(log)
	d.ops = ops.New(ops.Options{Store: st, Log: log, Crash: crash, Audit: auditor{d.audit}, OnFinish: d.statusChanged, Observer: d.metrics})
	if crash != nil {
		log.Warn("TEST-ONLY crash point armed: labvmd will SIGKILL itself there", "crash_at", crash.String())
	}
	var gatewayPorts []network.GatewayPort
	if cfg.PhoneHomePort != 0 {
		gatewayPorts = append(gatewayPorts, network.GatewayPort{Proto: "tcp", Port: uint16(cfg.PhoneHomePort)})
	}
	d.vnets = vnets.New(vnets.Config{DataDir: cfg.DataDir, Default: cfg.VNet, FirewallTable: cfg.FirewallTable,
		BridgePrefix: cfg.BridgePrefix, GatewayPorts: gatewayPorts}, st, hn, log)
	d.jobs = jobs.New(st, hv, log)
	d.datasets = datasets.New(cfg.DataDir, st, log)
	files := images.New(cfg.imagesDir())
	files.Puller.AllowLoopback = cfg.PullAllowLoopback
	d.lc = lifecycle.New(lifecycle.Config{
		DataDir: cfg.DataDir, DefaultDiskSize: cfg.DefaultDiskSize, ReadyTimeout: cfg.ReadyTimeout, ReadyProbe: cfg.ReadyProbe,
		StopTimeout: cfg.StopTimeout, ExecTimeout: cfg.ExecTimeout, PhoneHomePort: cfg.PhoneHomePort, Host: cfg.Host,
		Quota: cfg.Quota, MinFreeDisk: cfg.MinFreeDisk, Nameservers: cfg.Nameservers, Accel: accel,
	}, lifecycle.Deps{Log: log, Store: st, Hypervisor: hv, Ops: d.ops, Sizes: sizes, Images: files, Jobs: d.jobs, Networks: d.vnets, Datasets: d.datasets})
	d.vnets.OnSync(d.lc.NetworksChanged)
	d.metrics.CollectFrom(metrics.State{Instances: d.lc, Jobs: d.jobs, Operations: d.ops, Store: st, Hypervisor: hv})
	d.api = &httpapi.Server{
		Log: log,
		Info: httpapi.Info{Version: Version, Host: cfg.Host, Accelerator: accel.String(), AccelReason: why,
			DataDir: cfg.DataDir, LibvirtURI: cfg.LibvirtURI, DefaultVNet: cfg.VNet.Name},
		Authz:             &authz.Authorizer{Store: st},
		Audit:             d.audit,
		Ops:               d.ops,
		Lifecycle:         d.lc,
		Jobs:              d.jobs,
		VNets:             d.vnets,
		Datasets:          d.datasets,
		Library:           library.New(st, files, d.ops, log),
		Doctor:            doctor.New(st, hv, d.lc, files, d.ops, log),
		HostShutdownBound: cfg.HostShutdownBound,
		Metrics:           d.metrics.Handler(),
		Work:              d.ops,
	}
	return d, nil
}

// Version is labvmd's version, set at build time.
var Version = "dev"

// auditor adapts the audit log to what operations report.
type auditor struct{ l *audit.Log }

func (a auditor) Record(who ops.Who, action, target, opID string, err error) {
	a.l.Record(audit.Who{Name: who.Name, UID: who.UID}, action, target, opID, err)
}

// prepareDataDir makes the data dir and its subdirectories private: they
// hold every user's disks and seeds. QEMU (libvirt-qemu) must still
// traverse to the files it opens, so directories are 0711: searchable,
// not listable.
func prepareDataDir(cfg Config) error {
	for _, dir := range []string{cfg.DataDir, cfg.imagesDir(), cfg.instancesDir()} {
		if err := storage.EnsurePrivateDir(dir); err != nil {
			return err
		}
	}
	// Older labvm made instance dirs 0755 and disks and seeds 0644.
	return storage.RestrictInstanceDirs(cfg.instancesDir())
}

// Run sets up the host side (bridges, firewall), reconciles, serves the
// API until ctx ends, then gives in-flight operations ShutdownGrace to
// reach a safe point before cancelling them. onReady is called once the
// daemon accepts calls (systemd's READY=1). ln may be a socket handed over
// by systemd; nil makes the daemon listen on cfg.SocketPath itself.
func (d *Daemon) Run(ctx context.Context, ln net.Listener, onReady func()) error {
	// Operations outlive ctx by up to ShutdownGrace: a create halfway
	// through writing its disk should finish rather than roll back.
	opsCtx, cancelOps := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOps()
	d.ops.SetContext(opsCtx)
	defer func() {
		grace := time.AfterFunc(d.cfg.ShutdownGrace, cancelOps)
		d.ops.Wait()
		grace.Stop()
		// No operation runs: no boot is between its mounts and its
		// domain. Running guests keep their virtiofsd's own copy.
		d.datasets.Reconcile(nil)
		d.audit.Flush()
	}()

	if ln == nil {
		var err error
		if ln, err = httpapi.Listen(d.cfg.SocketPath, d.cfg.SocketGroup); err != nil {
			return err
		}
		// Only a socket we made is ours to remove; systemd's stays. One
		// left behind is removed as stale by the next Listen.
		defer func() { _ = os.Remove(d.cfg.SocketPath) }()
	}

	if d.cfg.MetricsListen != "" {
		// Listening before anything else: a taken port fails the start
		// rather than leaving the daemon up without the metrics asked for.
		mln, err := net.Listen("tcp", d.cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
		if !isLoopback(mln.Addr()) {
			d.log.Warn("metrics served without authentication on a non-loopback address; keep it behind a proxy or a firewall", "address", mln.Addr().String())
		}
		// Stopped when Run returns, however it returns: the wait for
		// operations (deferred above, so run after) waits for it too.
		mctx, stopMetrics := context.WithCancel(ctx)
		defer stopMetrics()
		d.ops.Add()
		go func() {
			defer d.ops.Done()
			if err := d.metrics.Serve(mctx, mln); err != nil {
				d.log.Error("metrics listener stopped", "address", mln.Addr().String(), "error", err)
			}
		}()
		d.log.Info("serving metrics", "address", mln.Addr().String())
	}

	d.status("setting up VNets: bridges and firewall")
	if err := d.vnets.Setup(ctx); err != nil {
		ln.Close()
		return err
	}
	d.status("reconciling instances with libvirt")
	// Dataset mounts left by a crash go first; boots that reconcile
	// resumes mount theirs again.
	d.datasets.Reconcile(nil)
	if err := d.lc.Reconcile(ctx, ctx.Done()); err != nil {
		ln.Close()
		return err
	}
	d.ops.Prune()
	// Deferred after the wait for operations, so it runs first.
	stopJobs := d.jobs.Start(ctx)
	defer stopJobs()
	d.log.Info("labvmd ready", "socket", d.cfg.SocketPath, "data_dir", d.cfg.DataDir,
		"accelerator", d.api.Info.Accelerator, "why", d.api.Info.AccelReason, "bridge", d.cfg.VNet.Bridge, "subnet", d.cfg.VNet.Subnet)
	if onReady != nil {
		onReady()
	}
	d.reportStatus()
	stopStatus := d.reportStatusEvery(ctx, statusEvery)
	defer stopStatus()
	err := d.api.Serve(ctx, ln)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if d.cfg.StopInstancesOnExit {
		d.log.Info("labvmd stopping: shutting instances down (host shutdown)", "bound", d.cfg.HostShutdownBound)
		d.lc.HostShutdown(opsCtx, d.cfg.HostShutdownBound)
	} else {
		d.log.Info("labvmd stopping; VMs keep running", "grace", d.cfg.ShutdownGrace)
	}
	return err
}

// isLoopback reports whether a listener's address is on loopback only.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// status reports a one-line status (systemd's STATUS=).
func (d *Daemon) status(line string) {
	if d.onStatus != nil {
		d.onStatus(line)
	}
}

// statusEvery bounds how often the status line is recomputed: it reads
// every instance, which must not be a cost every operation pays.
const statusEvery = 2 * time.Second

// statusChanged notes that the status line is stale; reportStatusEvery
// recomputes it at most every statusEvery.
func (d *Daemon) statusChanged() {
	select {
	case d.statusKick <- struct{}{}:
	default:
	}
}

// reportStatusEvery reports the status after changes, at most once per
// period, until ctx ends; the returned function waits for it to stop.
func (d *Daemon) reportStatusEvery(ctx context.Context, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		dirty := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.statusKick:
				dirty = true
			case <-tick.C:
				if dirty {
					d.reportStatus()
					dirty = false
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// reportStatus summarises the instances and operations in one line.
func (d *Daemon) reportStatus() {
	if d.onStatus == nil {
		return
	}
	// The shared snapshot: this runs every 2 s, and copying 10,000
	// records each time was garbage for nothing.
	list := d.lc.InstanceSnapshot()
	counts := map[vm.State]int{}
	for _, inst := range list {
		counts[inst.State]++
	}
	d.status(fmt.Sprintf("%d instances: %d running, %d stopped, %d other; %d operations in flight",
		len(list), counts[vm.StateRunning], counts[vm.StateStopped], len(list)-counts[vm.StateRunning]-counts[vm.StateStopped], d.ops.Running()))
}

// Healthy proves the daemon can do its job: the store answers and libvirt
// is reachable. systemd's watchdog is fed only while it holds.
func (d *Daemon) Healthy(ctx context.Context) error { return d.lc.Healthy(ctx) }

// Close releases the store and the libvirt connection.
func (d *Daemon) Close() error {
	if c, ok := d.hv.(interface{ Close() error }); ok {
		// Dropping the libvirt connection loses nothing (see
		// .errcheck-excludes); the store's Close below is the one that can.
		_ = c.Close()
	}
	return d.store.Close()
}

// Store is the daemon's store (tests and tools that seed or inspect it).
func (d *Daemon) Store() *store.Store { return d.store }

// Lifecycle is the daemon's instance engine (tests).
func (d *Daemon) Lifecycle() *lifecycle.Engine { return d.lc }

// Ops is the daemon's operation engine (tests).
func (d *Daemon) Ops() *ops.Engine { return d.ops }

// Metrics is the daemon's metrics registry (tests).
func (d *Daemon) Metrics() *metrics.Metrics { return d.metrics }

// API is the daemon's API server (tests walk its route table).
func (d *Daemon) API() *httpapi.Server { return d.api }

// The libvirt driver has every capability the engines look for.
var (
	_ Hypervisor              = (*vmlibvirt.Driver)(nil)
	_ jobs.Runner             = (*vmlibvirt.Driver)(nil)
	_ lifecycle.ConsoleOpener = (*vmlibvirt.Driver)(nil)
	_ metrics.DomainStatser   = (*vmlibvirt.Driver)(nil)
)
