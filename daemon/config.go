package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/labvm/labvm/daemon/cluster"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/policy"
	"github.com/labvm/labvm/daemon/vnets"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
)

// Config is everything labvmd can be told. cmd/labvmd fills it from flags
// and the config file; nothing in this package reads either.
type Config struct {
	// SocketPath is the API socket.
	SocketPath string
	// SocketGroup may use the socket (mode 0660); empty or missing group
	// leaves it root-only.
	SocketGroup string
	// DataDir holds the database, images and instance disks.
	DataDir string
	// LibvirtURI is the hypervisor connection, e.g. qemu:///system.
	LibvirtURI string
	// Accel chooses KVM or TCG; auto uses KVM only where it really works.
	Accel vm.AccelMode
	// VNet is the default VNet every instance joins unless told otherwise.
	VNet vnets.VNetConfig
	// DefaultDiskSize is the OS disk's virtual size when create names none.
	DefaultDiskSize int64
	// ReadyTimeout bounds SettingUp: a full cloud image under TCG needs
	// minutes before cloud-init finishes.
	ReadyTimeout time.Duration
	// ReadyProbe is how a booted guest is judged ready: "agent" (the
	// default; empty means the same) waits for the guest agent or
	// phone-home; "none" calls it ready once its domain runs, for
	// libvirt drivers with no guest at all (test:///default in
	// benchmarks), where the agent would never answer.
	ReadyProbe string
	// StopTimeout bounds a graceful shutdown before the domain is
	// destroyed.
	StopTimeout time.Duration
	// ExecTimeout is the default bound of `labvm exec`.
	ExecTimeout time.Duration
	// ShutdownGrace is how long in-flight operations may run on after
	// the daemon is told to stop.
	ShutdownGrace time.Duration
	// StopInstancesOnExit makes SIGTERM a host shutdown: running instances
	// are shut down cleanly, in parallel, within HostShutdownBound, and
	// start again at the next daemon start. Off by default: restarting
	// labvmd must never touch VMs.
	StopInstancesOnExit bool
	HostShutdownBound   time.Duration
	// Sizes are added to (or override) the default size catalogue.
	Sizes []vm.Size
	// PhoneHomePort is where cloud-init's phone_home reaches the daemon on
	// each VNet's gateway address; 0 disables it.
	PhoneHomePort int
	// Host names this host in instance details.
	Host string
	// Quota are the default core limits (0 = none).
	Quota lifecycle.QuotaConfig
	// MinFreeDisk is the free space the data dir must keep for a create
	// or start to be accepted.
	MinFreeDisk int64
	// FirewallTable is the nftables table labvm owns.
	FirewallTable string
	// BridgePrefix starts the bridge names of VNets made through the API.
	BridgePrefix string
	// Nameservers are handed to guests of NAT VNets as their resolvers.
	Nameservers []netip.Addr
	// PullAllowLoopback lets `image pull` fetch from this host's own
	// addresses (a mirror served locally, tests). Off: a pull can never
	// reach the host's services.
	PullAllowLoopback bool
	// MetricsListen, when set, is a TCP address (host:port) where
	// /metrics is served without authentication, e.g. 127.0.0.1:9477:
	// keep it on loopback or behind a proxy. The API socket serves
	// /metrics to owners whether or not it is set.
	MetricsListen string
	// Cluster, when set, makes this host a member of a lab cluster kept
	// in etcd (daemon/cluster). nil: a host of its own.
	Cluster *ClusterConfig
	// IdleDefault is the idle shutdown of instances created without one
	// (0: off); IdleMaximum the longest one accepted (at most 3 days).
	IdleDefault time.Duration
	IdleMaximum time.Duration
	// IdleCPUThreshold is the guest CPU use, in percent of its vCPUs,
	// that counts as use (0: policy.DefaultCPUThreshold).
	IdleCPUThreshold float64
	// GuestWatch is how often labvmd looks for guests that powered
	// themselves off (or whose QEMU died), to record them Stopped
	// (0: lifecycle.DefaultGuestWatch, 5s).
	GuestWatch time.Duration
	// TestIdleMinimum is TEST-ONLY (labvmd --test-idle-minimum): it lowers
	// the idle shutdown's 15-minute minimum, and the idle policy samples
	// six times per minimum. Zero in production.
	TestIdleMinimum time.Duration
	// TestCronSeconds is TEST-ONLY (labvmd --test-cron-seconds): schedules
	// take a leading seconds field. Off in production.
	TestCronSeconds bool
	// TestHostMountNS is TEST-ONLY (labvmd --test-host-mount-ns): the
	// mount namespace dataset mounts are made in, instead of PID 1's.
	// The e2e story runs labvmd in a namespace of its own, as systemd
	// does, on machines whose PID 1 namespace it may not join.
	TestHostMountNS string
	// CrashAt is TEST-ONLY (LABVM_CRASH_AT): the daemon SIGKILLs itself
	// when an operation reaches this point, OP/STAGE[/after]; see
	// ops.CrashPoint. Empty in production.
	CrashAt string
}

// Ready probes (Config.ReadyProbe).
const (
	ReadyProbeAgent = lifecycle.ReadyProbeAgent
	ReadyProbeNone  = lifecycle.ReadyProbeNone
)

// VNetConfig describes the default VNet.
type VNetConfig = vnets.VNetConfig

// ClusterConfig is the `cluster:` section.
type ClusterConfig = cluster.Config

// QuotaConfig are the configured core limits.
type QuotaConfig = lifecycle.QuotaConfig

// DefaultMinFreeDisk is the free space the data dir must keep.
const DefaultMinFreeDisk = lifecycle.DefaultMinFreeDisk

// DefaultConfig is the zero-config daemon: data in /var/lib/labvm, the
// default VNet on bridge labvm0, 120 GiB disks.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		SocketPath:  "/run/labvm/labvm.sock",
		SocketGroup: "labvm",
		DataDir:     "/var/lib/labvm",
		LibvirtURI:  "qemu:///system",
		Accel:       vm.AccelAuto,
		VNet: VNetConfig{
			Name:       "default",
			Bridge:     "labvm0",
			SubnetName: "default",
			Subnet:     netip.MustParsePrefix("10.177.0.0/24"),
			Egress:     network.EgressNAT,
		},
		FirewallTable:     network.DefaultFirewallTable,
		BridgePrefix:      "lv",
		DefaultDiskSize:   storage.DefaultDiskSize,
		ReadyTimeout:      15 * time.Minute,
		StopTimeout:       2 * time.Minute,
		ExecTimeout:       5 * time.Minute,
		ShutdownGrace:     20 * time.Second,
		HostShutdownBound: 90 * time.Second,
		PhoneHomePort:     8719,
		Host:              host,
	}
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	switch {
	case c.SocketPath == "" || !filepath.IsAbs(c.SocketPath):
		return fmt.Errorf("socket path %q must be absolute", c.SocketPath)
	case c.DataDir == "" || !filepath.IsAbs(c.DataDir):
		return fmt.Errorf("data dir %q must be absolute", c.DataDir)
	case c.ReadyTimeout <= 0 || c.StopTimeout <= 0 || c.ExecTimeout <= 0 || c.ShutdownGrace <= 0:
		return fmt.Errorf("timeouts must be positive")
	case c.DefaultDiskSize < 1<<30:
		return fmt.Errorf("default disk size %d is below 1 GiB", c.DefaultDiskSize)
	case c.ReadyProbe != "" && c.ReadyProbe != ReadyProbeAgent && c.ReadyProbe != ReadyProbeNone:
		return fmt.Errorf("ready probe %q: use %q or %q", c.ReadyProbe, ReadyProbeAgent, ReadyProbeNone)
	}
	if err := c.validateIdle(); err != nil {
		return err
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("metrics listen address %q: want host:port, e.g. 127.0.0.1:9477: %w", c.MetricsListen, err)
		}
	}
	if c.Cluster != nil {
		if err := c.Cluster.Validate(); err != nil {
			return err
		}
	}
	if c.BridgePrefix == "" || len(c.BridgePrefix) > 6 {
		return fmt.Errorf("bridge prefix %q: use 1-6 characters", c.BridgePrefix)
	}
	if err := network.ValidateBridgeName(c.VNet.Bridge); err != nil {
		return fmt.Errorf("default vnet: %w", err)
	}
	if err := network.ValidateCIDR(c.VNet.Subnet); err != nil {
		return fmt.Errorf("default vnet: %w", err)
	}
	return nil
}

// idleBounds are the idle shutdown values this host accepts.
func (c Config) idleBounds() vm.IdleBounds {
	b := vm.DefaultIdleBounds()
	if c.TestIdleMinimum > 0 {
		b.Min = c.TestIdleMinimum
	}
	if c.IdleMaximum > 0 {
		b.Max = c.IdleMaximum
	}
	return b
}

func (c Config) validateIdle() error {
	b := c.idleBounds()
	switch {
	case c.IdleMaximum != 0 && (c.IdleMaximum < b.Min || c.IdleMaximum > vm.MaxIdleShutdown):
		return fmt.Errorf("idle_shutdown.maximum %s: want %s to %s", vm.FormatDuration(c.IdleMaximum), vm.FormatDuration(b.Min), vm.FormatDuration(vm.MaxIdleShutdown))
	case c.IdleDefault != 0 && (c.IdleDefault < b.Min || c.IdleDefault > b.Max):
		return fmt.Errorf("idle_shutdown.default %s: want off or %s to %s", vm.FormatDuration(c.IdleDefault), vm.FormatDuration(b.Min), vm.FormatDuration(b.Max))
	case c.IdleCPUThreshold < 0 || c.IdleCPUThreshold > 100:
		return fmt.Errorf("idle_shutdown.cpu_threshold %g: want a percentage from 0 to 100", c.IdleCPUThreshold)
	case c.TestIdleMinimum < 0 || c.TestIdleMinimum > vm.MinIdleShutdown:
		return fmt.Errorf("--test-idle-minimum %s: want up to %s", c.TestIdleMinimum, vm.MinIdleShutdown)
	}
	return nil
}

// idleSample is how often the idle policy looks: every minute, or six
// times per the test-only minimum.
func (c Config) idleSample() time.Duration {
	if c.TestIdleMinimum > 0 {
		return max(min(time.Minute, c.TestIdleMinimum/6), time.Second)
	}
	return policy.DefaultSample
}

func (c Config) dbPath() string       { return filepath.Join(c.DataDir, "labvm.db") }
func (c Config) imagesDir() string    { return filepath.Join(c.DataDir, "images") }
func (c Config) instancesDir() string { return filepath.Join(c.DataDir, "instances") }
