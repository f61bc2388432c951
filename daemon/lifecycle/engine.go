// Package lifecycle owns what happens to an instance: create, start, stop,
// restart and delete as operations; readiness (the guest agent, cloud-init
// phone-home, the setup and startup scripts); reconciling the store with
// libvirt and the data dir at start and recovering interrupted work; the
// guest watcher, which records as Stopped an instance whose guest powered
// itself off (guestwatch.go); the manifests beside each disk; host shutdown and autostart; the host guards
// (disk, memory); and core quota. Stop waits for the guest here
// (shutdownDomain), and the steps each operation reports are the Step
// constants in steps.go.
//
// It knows nothing of HTTP or who may call it: the API authorizes first.
package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/ops"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/images"
	"github.com/labvm/labvm/vm"
)

// Hypervisor is what the lifecycle needs from libvirt. The libvirt driver
// is the real one; keeping the interface here, at its consumer, keeps the
// lifecycle's view of libvirt to these few calls.
type Hypervisor interface {
	StartDomain(ctx context.Context, xml string) error
	Shutdown(ctx context.Context, name string) error
	WaitGone(ctx context.Context, name string) error
	Destroy(ctx context.Context, name string) error
	DomainState(ctx context.Context, name string) (vm.DomainStatus, error)
	OwnedDomains(ctx context.Context) ([]vm.OwnedDomain, error)
	// ActiveDomainNames is the set of running domains' names, in one
	// call however many run: the guest watcher's look.
	ActiveDomainNames(ctx context.Context) (map[string]bool, error)
	AgentPing(ctx context.Context, name string) error
	Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error)
}

// Jobs is what the lifecycle needs of the job queue: stop the running jobs
// of an instance going down, and run the queued ones once it is back.
type Jobs interface {
	Halt(ctx context.Context, inst vm.Instance, reason string)
	Resume(instanceID string)
}

// Networks places a new instance on a VNet and subnet, inside the create
// transaction, and locks and unlocks its port in the host firewall.
type Networks interface {
	Place(tx *store.Tx, vnet, subnet string) (store.VNet, store.Subnet, error)
	// AddInstancePort locks a new instance's port to its MAC and address
	// before its domain boots, touching no other instance's.
	AddInstancePort(ctx context.Context, inst vm.Instance) error
	// RemoveInstancePort unlocks the port of an instance whose address
	// was released; one that is not locked is no error.
	RemoveInstancePort(ctx context.Context, inst vm.Instance) error
}

// Datasets checks a create's datasets and mounts an instance's for each
// boot of its domain.
type Datasets interface {
	// Check validates the datasets of a create inside its transaction.
	Check(tx *store.Tx, names []string) error
	// Attach mounts the instance's datasets and returns its domain's
	// shares; on failure nothing stays mounted.
	Attach(inst vm.Instance) ([]vm.Share, error)
	// Detach releases what Attach made, once the domain is gone.
	Detach(inst vm.Instance)
}

// Ready probes (Config.ReadyProbe).
const (
	ReadyProbeAgent = "agent"
	ReadyProbeNone  = "none"
)

// Config is the part of labvmd's config the lifecycle uses.
type Config struct {
	DataDir         string
	DefaultDiskSize int64
	ReadyTimeout    time.Duration
	ReadyProbe      string
	StopTimeout     time.Duration
	ExecTimeout     time.Duration
	PhoneHomePort   int
	Host            string
	Quota           QuotaConfig
	MinFreeDisk     int64
	Nameservers     []netip.Addr
	Accel           vm.Accel
	// Idle is the host's idle shutdown bounds and default.
	Idle IdleConfig
	// GuestWatch is how often the guest watcher looks for guests that
	// powered themselves off (0: DefaultGuestWatch).
	GuestWatch time.Duration
}

// Paths are where an instance's files live in the data dir.
type Paths struct{ DataDir string }

// Instances is the directory of every instance's files.
func (p Paths) Instances() string { return filepath.Join(p.DataDir, "instances") }

// Images is where base images live.
func (p Paths) Images() string { return filepath.Join(p.DataDir, "images") }

// Dir is one instance's directory.
func (p Paths) Dir(id string) string { return filepath.Join(p.Instances(), id) }

// Disk is the instance's OS disk.
func (p Paths) Disk(id string) string { return filepath.Join(p.Dir(id), "disk.qcow2") }

// Seed is the instance's NoCloud seed.
func (p Paths) Seed(id string) string { return filepath.Join(p.Dir(id), "seed.iso") }

// Console is the instance's serial console log.
func (p Paths) Console(id string) string { return filepath.Join(p.Dir(id), "console.log") }

// Manifest is the instance's manifest.
func (p Paths) Manifest(id string) string { return filepath.Join(p.Dir(id), manifestFile) }

// Engine runs instance operations.
type Engine struct {
	cfg    Config
	paths  Paths
	log    *slog.Logger
	store  *store.Store
	hv     Hypervisor
	ops    *ops.Engine
	sizes  *vm.Catalogue
	images *images.Catalogue
	jobs   Jobs
	nets   Networks
	names  Names
	data   Datasets
	ready  *readiness
	// phone is the phone-home server, once started.
	phone atomic.Pointer[phoneHome]
	// stopping is closed when the daemon starts stopping; long waits
	// (readiness) give up at once and leave the rest to reconcile.
	stopping <-chan struct{}
	// hostShutdown serialises host shutdowns: logind's early notice and
	// labvm-guests.service's call may overlap, and the later one must not
	// return (letting systemd stop labvmd) while the first still stops
	// instances.
	hostShutdown sync.Mutex
}

// Deps are what an Engine is built from.
type Deps struct {
	Log        *slog.Logger
	Store      *store.Store
	Hypervisor Hypervisor
	Ops        *ops.Engine
	Sizes      *vm.Catalogue
	Images     *images.Catalogue
	Jobs       Jobs
	Networks   Networks
	// Names is the cluster's name registry; nil outside a cluster.
	Names    Names
	Datasets Datasets
}

// New returns an engine.
func New(cfg Config, d Deps) *Engine {
	return &Engine{cfg: cfg, paths: Paths{DataDir: cfg.DataDir}, log: d.Log, store: d.Store, hv: d.Hypervisor, ops: d.Ops,
		sizes: d.Sizes, images: d.Images, jobs: d.Jobs, nets: d.Networks, data: d.Datasets, names: d.Names, ready: newReadiness(), stopping: make(chan struct{})}
}

// Paths tells where instance files live.
func (e *Engine) Paths() Paths { return e.paths }

// Sizes is the size catalogue.
func (e *Engine) Sizes() *vm.Catalogue { return e.sizes }

// Reconcile brings the store and libvirt into agreement, starts the
// instances a host shutdown stopped and serves phone-home until ctx ends.
// stopping is closed when the daemon starts stopping.
func (e *Engine) Reconcile(ctx context.Context, stopping <-chan struct{}) error {
	e.stopping = stopping
	if err := e.reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	e.autostart()
	e.startPhoneHome(ctx)
	return nil
}

// Healthy proves the lifecycle can work: the store answers and libvirt is
// reachable.
func (e *Engine) Healthy(ctx context.Context) error {
	// A read of one small record proves bbolt answers; listing the
	// instances (a copy of every cached record) proved nothing more.
	if err := e.store.View(func(tx *store.Tx) error { _, _, err := tx.QuotaLimits(); return err }); err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	if _, err := e.hv.OwnedDomains(ctx); err != nil {
		return fmt.Errorf("libvirt: %w", err)
	}
	return nil
}

// ErrInterrupted ends a wait because the daemon is stopping; the next
// start's reconcile picks the work up again.
var ErrInterrupted = errdefs.New(errdefs.ErrUnavailable, "`labvm show` tells how the instance ended up once labvmd is back",
	"interrupted: labvmd is stopping; the wait resumes when it starts again")

func system() ops.Who { return ops.Who{Name: "labvmd"} }
