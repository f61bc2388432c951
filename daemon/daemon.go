package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/audit"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/cluster"
	"github.com/labvm/labvm/daemon/datasets"
	"github.com/labvm/labvm/daemon/doctor"
	"github.com/labvm/labvm/daemon/httpapi"
	"github.com/labvm/labvm/daemon/jobs"
	"github.com/labvm/labvm/daemon/library"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/metrics"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/policy"
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
	policy   *policy.Engine
	datasets *datasets.Engine
	api      *httpapi.Server
	metrics  *metrics.Metrics
	// cluster is this host's membership of a lab cluster, nil for none.
	cluster  *cluster.Member
	onStatus func(string)
	// fwOwners records this daemon as its firewall table's owner; nil
	// over a fake network.
	fwOwners *network.FirewallRegistry
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
	// PolicyClock overrides the idle shutdown's and the schedules' clock
	// (unit tests).
	PolicyClock policy.Clock
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
	if opts.Hypervisor == nil && localSystemURI(cfg.LibvirtURI) {
		if err := checkDataDirReachable(cfg.DataDir, log.Warn); err != nil {
			return nil, err
		}
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
	var fwOwners *network.FirewallRegistry
	if hn == nil {
		hn = vnets.Kernel{}
		fwOwners = &network.FirewallRegistry{Dir: network.DefaultFirewallOwners}
	}
	accel, why := vm.ChooseAccel(cfg.Accel, vm.ReadHostFacts())
	d := &Daemon{cfg: cfg, log: log, store: st, hv: hv, onStatus: opts.Status, statusKick: make(chan struct{}, 1), fwOwners: fwOwners}
	d.audit = audit.New(st, log)
	d.metrics = metrics.New(log)
	d.ops = ops.New(ops.Options{Store: st, Log: log, Crash: crash, Audit: auditor{d.audit}, OnFinish: d.statusChanged, Observer: d.metrics})
	// Instance states reach the event stream from the store's commits,
	// so a change made without an operation is seen too.
	st.OnInstanceChange(d.ops.Events.PublishInstance)
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
	var names lifecycle.Names
	if cfg.Cluster != nil {
		cc := *cfg.Cluster
		cc.Version = Version
		cc.Socket = cfg.SocketPath
		// d.clusterSnapshot reads d.lc, made below; it is first called
		// when Run starts the member.
		m, err := cluster.New(cc, d.clusterSnapshot, log)
		if err != nil {
			_ = d.Close()
			return nil, fmt.Errorf("config: %w", err)
		}
		m.CacheRolesIn(roleCache{st})
		d.cluster = m
		names = clusterNames{m}
	}
	d.datasets = datasets.New(cfg.DataDir, cfg.TestHostMountNS, st, log)
	files := images.New(cfg.imagesDir())
	files.Puller.AllowLoopback = cfg.PullAllowLoopback
	d.lc = lifecycle.New(lifecycle.Config{
		DataDir: cfg.DataDir, DefaultDiskSize: cfg.DefaultDiskSize, ReadyTimeout: cfg.ReadyTimeout, ReadyProbe: cfg.ReadyProbe,
		StopTimeout: cfg.StopTimeout, ExecTimeout: cfg.ExecTimeout, PhoneHomePort: cfg.PhoneHomePort, Host: cfg.Host,
		Quota: cfg.Quota, MinFreeDisk: cfg.MinFreeDisk, Nameservers: cfg.Nameservers, Accel: accel,
		Idle:       lifecycle.IdleConfig{Bounds: cfg.idleBounds(), Default: cfg.IdleDefault},
		GuestWatch: cfg.GuestWatch,
	}, lifecycle.Deps{Log: log, Store: st, Hypervisor: hv, Ops: d.ops, Sizes: sizes, Images: files, Jobs: d.jobs, Networks: d.vnets, Datasets: d.datasets, Names: names})
	d.vnets.OnSync(d.lc.NetworksChanged)
	stats, _ := hv.(policy.DomainStatser)
	d.policy = policy.New(policy.Config{Sample: cfg.idleSample(), CPUThreshold: cfg.IdleCPUThreshold, CronSeconds: cfg.TestCronSeconds},
		policy.Deps{Log: log, Clock: opts.PolicyClock, Store: st, Lifecycle: d.lc, Jobs: d.jobs, Ops: d.ops, Stats: stats, Audit: d.audit, Observer: d.metrics})
	if cfg.TestIdleMinimum > 0 || cfg.TestCronSeconds {
		log.Warn("TEST-ONLY policy clock: never use in production", "idle_minimum", cfg.TestIdleMinimum, "cron_seconds", cfg.TestCronSeconds)
	}
	if cfg.TestHostMountNS != "" {
		log.Warn("TEST-ONLY mount namespace for datasets: never use in production", "namespace", cfg.TestHostMountNS)
	}
	d.metrics.SessionsFrom(d.policy.Activity.Open)
	d.metrics.CollectFrom(metrics.State{Instances: d.lc, Jobs: d.jobs, Operations: d.ops, Store: st, Hypervisor: hv})
	dr := doctor.New(st, hv, d.lc, files, d.ops, log)
	if fwOwners != nil {
		dr.WatchFirewalls(fwOwners, cfg.FirewallTable)
	}
	d.api = &httpapi.Server{
		Log: log,
		Info: httpapi.Info{Version: Version, Host: cfg.Host, Accelerator: accel.String(), AccelReason: why,
			DataDir: cfg.DataDir, LibvirtURI: cfg.LibvirtURI, DefaultVNet: cfg.VNet.Name},
		Authz:             &authz.Authorizer{Store: st, Shared: sharedRoles(d.cluster)},
		Audit:             d.audit,
		Ops:               d.ops,
		Lifecycle:         d.lc,
		Jobs:              d.jobs,
		VNets:             d.vnets,
		Datasets:          d.datasets,
		Library:           library.New(st, files, d.ops, log),
		Doctor:            dr,
		HostShutdownBound: cfg.HostShutdownBound,
		Metrics:           d.metrics.Handler(),
		Policy:            d.policy,
		Work:              d.ops,
	}
	if d.cluster != nil {
		d.api.Cluster = d.cluster
	}
	return d, nil
}

// sharedRoles is the cluster's roles for authz, nil outside a cluster
// (a nil *cluster.Member must not become a non-nil interface).
func sharedRoles(m *cluster.Member) authz.SharedRoles {
	if m == nil {
		return nil
	}
	return m
}

// roleCache keeps the cluster's roles in the store, where authz reads
// them.
type roleCache struct{ st *store.Store }

func (c roleCache) Roles() (list []store.RoleAssignment, err error) {
	err = c.st.View(func(tx *store.Tx) error {
		list, err = tx.Roles()
		return err
	})
	return list, err
}

func (c roleCache) ReplaceRoles(list []store.RoleAssignment) error {
	return c.st.Update(func(tx *store.Tx) error { return tx.ReplaceRoles(list) })
}

// clusterNames adapts the cluster member to the lifecycle's Names.
type clusterNames struct{ m *cluster.Member }

func (n clusterNames) Reserve(ctx context.Context, r lifecycle.NameReservation) error {
	return n.m.Reserve(ctx, cluster.Reservation(r))
}

func (n clusterNames) Release(ctx context.Context, name string) { n.m.Release(ctx, name) }

// clusterSnapshot is what this host publishes to its cluster: its
// capacity and its instances, read from the store.
func (d *Daemon) clusterSnapshot() (cluster.Snapshot, error) {
	list, err := d.lc.Instances()
	if err != nil {
		return cluster.Snapshot{}, err
	}
	capacity, err := cluster.HostCapacity(d.cfg.DataDir)
	if err != nil {
		return cluster.Snapshot{}, err
	}
	snap := cluster.Snapshot{Instances: make([]cluster.Instance, 0, len(list))}
	for _, inst := range list {
		capacity.CoresUsed += inst.Size.VCPUs
		snap.Instances = append(snap.Instances, cluster.Instance{Name: inst.Name, State: api.InstanceState(inst.State.String()),
			Owner: inst.Owner(), Size: inst.Size.Name, Family: inst.Size.Family, VCPUs: inst.Size.VCPUs})
	}
	snap.Capacity = capacity
	err = d.store.View(func(tx *store.Tx) error {
		imgs, err := tx.Images()
		for _, img := range imgs {
			snap.Images = append(snap.Images, img.Name)
		}
		return err
	})
	return snap, err
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
	if d.fwOwners != nil {
		// Recorded before the table is installed: a doctor deciding
		// whether a table of this name is orphaned sees this process.
		if err := d.fwOwners.Register(d.cfg.FirewallTable, d.cfg.DataDir); err != nil {
			d.log.Warn("could not record this daemon as its firewall table's owner; `labvm doctor` on this host will not know the table is in use", "table", d.cfg.FirewallTable, "error", err)
		}
	}
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
	if d.cluster != nil {
		// Joins the cluster in the background: etcd being away never
		// holds up this host's own work. Ends (revoking the lease) when
		// ctx ends; the wait for operations waits for it.
		d.ops.Add()
		go func() {
			defer d.ops.Done()
			d.cluster.Run(ctx)
		}()
	}
	// Deferred after the wait for operations, so it runs first.
	stopJobs := d.jobs.Start(ctx)
	defer stopJobs()
	// The policies start after reconcile, so their first look (and the
	// schedules missed while labvmd was down) sees the instances as they
	// are; they stop with ctx, before the wait for operations.
	waitPolicy := d.policy.Run(ctx)
	defer waitPolicy()
	// The guest watcher too: it records as Stopped the instances whose
	// guest powered itself off, and stops with ctx.
	waitGuests := d.lc.WatchGuests(ctx)
	defer waitGuests()
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
	if d.cluster != nil {
		d.cluster.Changed()
	}
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

// HostShutdown stops every running instance cleanly because the host is
// going down (logind's PrepareForShutdown, seen by labvmd's inhibitor), as
// POST /v1/host/shutdown does; they start again at the next start.
func (d *Daemon) HostShutdown(ctx context.Context) {
	d.lc.HostShutdown(ctx, d.cfg.HostShutdownBound)
}

// Healthy proves the daemon can do its job: the store answers and libvirt
// is reachable. systemd's watchdog is fed only while it holds.
func (d *Daemon) Healthy(ctx context.Context) error { return d.lc.Healthy(ctx) }

// Close releases the store and the libvirt connection.
func (d *Daemon) Close() error {
	if d.cluster != nil {
		_ = d.cluster.Close() // the etcd client: nothing of ours is lost
	}
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

// Policy is the daemon's idle shutdown and schedules (tests).
func (d *Daemon) Policy() *policy.Engine { return d.policy }

// API is the daemon's API server (tests walk its route table).
func (d *Daemon) API() *httpapi.Server { return d.api }

// The libvirt driver has every capability the engines look for.
var (
	_ Hypervisor              = (*vmlibvirt.Driver)(nil)
	_ jobs.Runner             = (*vmlibvirt.Driver)(nil)
	_ lifecycle.ConsoleOpener = (*vmlibvirt.Driver)(nil)
	_ metrics.DomainStatser   = (*vmlibvirt.Driver)(nil)
	_ policy.DomainStatser    = (*vmlibvirt.Driver)(nil)
)
