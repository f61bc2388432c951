// Command labvmd is the labvm daemon: it reads flags and the config file,
// wires the daemon together and runs it. Nothing else lives here.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/systemd"
	"github.com/labvm/labvm/vm"
	"gopkg.in/yaml.v3"
)

// fileConfig is /etc/labvm/labvmd.yaml. Every key is optional.
type fileConfig struct {
	Socket        string    `yaml:"socket"`
	SocketGroup   *string   `yaml:"socket_group"`
	DataDir       string    `yaml:"data_dir"`
	LibvirtURI    string    `yaml:"libvirt_uri"`
	Accelerator   string    `yaml:"accelerator"`
	DiskSize      string    `yaml:"disk_size"`
	ReadyTimeout  string    `yaml:"ready_timeout"`
	StopTimeout   string    `yaml:"stop_timeout"`
	PhoneHomePort *int      `yaml:"phone_home_port"`
	FirewallTable string    `yaml:"firewall_table"`
	MinFreeDisk   string    `yaml:"min_free_disk"`
	MetricsListen string    `yaml:"metrics_listen"`
	DefaultVNet   *vnetFile `yaml:"default_vnet"`
	Sizes         []vm.Size `yaml:"sizes"`
	Quota         *struct {
		Total    int            `yaml:"total"`
		Families map[string]int `yaml:"families"`
	} `yaml:"quota"`
	Cluster *clusterFile `yaml:"cluster"`
}

// clusterFile is the `cluster:` section: opting this host into a lab
// cluster kept in etcd (see docs/ARCHITECTURE.md, "Clusters").
type clusterFile struct {
	Name string   `yaml:"name"`
	Host string   `yaml:"host"`
	Etcd []string `yaml:"etcd"`
	CA   string   `yaml:"ca"`
	Cert string   `yaml:"cert"`
	Key  string   `yaml:"key"`
	// TTL is the liveness lease, e.g. "10s".
	TTL string `yaml:"ttl"`
	// SSH is how users reach this host (ssh://[user@]host[:port]),
	// published for creates placed here; ssh://HOST by default.
	SSH string `yaml:"ssh"`
}

type vnetFile struct {
	Bridge string `yaml:"bridge"`
	Subnet string `yaml:"subnet"`
	Egress string `yaml:"egress"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "labvmd: %v\n", err)
		os.Exit(1)
	}
}

func run() (err error) {
	var (
		configPath = flag.String("config", "/etc/labvm/labvmd.yaml", "config file (optional; missing file means defaults)")
		socket     = flag.String("socket", "", "API socket path (default /run/labvm/labvm.sock)")
		sockGroup  = flag.String("socket-group", "", "group allowed to use the socket (default labvm)")
		dataDir    = flag.String("data-dir", "", "data directory (default /var/lib/labvm)")
		libvirtURI = flag.String("libvirt-uri", "", "libvirt connection URI (default qemu:///system)")
		accel      = flag.String("accel", "", "accelerator: auto, kvm or tcg (default auto)")
		bridge     = flag.String("bridge", "", "default VNet's bridge (default labvm0)")
		subnet     = flag.String("subnet", "", "default VNet's subnet CIDR (default 10.177.0.0/24)")
		fwTable    = flag.String("firewall-table", "", "nftables table labvm owns (default labvm)")
		brPrefix   = flag.String("bridge-prefix", "", "prefix of the bridges of VNets made through the API (default lv)")
		phonePort  = flag.Int("phone-home-port", -1, "port for cloud-init phone_home on the gateway; 0 disables (default 8719)")
		readyTO    = flag.Duration("ready-timeout", 0, "how long a guest may take to become ready (default 15m)")
		readyProbe = flag.String("ready-probe", "", "how a guest is judged ready: agent (guest agent or phone-home; the default) or none (as soon as its domain runs: for drivers without guests such as test:///default)")
		stopTO     = flag.Duration("stop-timeout", 0, "how long a guest may take to power off before it is destroyed (default 2m)")
		logLevel   = flag.String("log-level", "info", "debug, info, warn or error")
		minFree    = flag.String("min-free-disk", "", "free space the data dir must keep for create/start, e.g. 2G (default 2G)")
		metricsAt  = flag.String("metrics-listen", "", "also serve /metrics on this TCP address, e.g. 127.0.0.1:9477, WITHOUT authentication: keep it on loopback or behind a proxy (default: only owners, on the socket)")
		stopOnExit = flag.Bool("stop-instances-on-exit", false, "treat SIGTERM as a host shutdown: shut running instances down cleanly (they start again at the next start); for the host's shutdown sequence, never for a plain restart")
		version    = flag.Bool("version", false, "print the version and exit")
		units      = flag.String("write-units", "", "write the systemd units (labvmd.service, labvmd.socket, labvm-guests.service) into this directory and exit")
		removeFW   = flag.Bool("remove-firewall", false, "remove the firewall table (--firewall-table) and its rules in other tables, then exit; for uninstalling")
	)
	flag.Parse()
	if *version {
		fmt.Println("labvmd", daemon.Version)
		return nil
	}
	if *units != "" {
		return writeUnits(*units)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	cfg := daemon.DefaultConfig()
	if err := applyFile(&cfg, *configPath); err != nil {
		return err
	}
	setIf(&cfg.SocketPath, *socket)
	setIf(&cfg.SocketGroup, *sockGroup)
	setIf(&cfg.DataDir, *dataDir)
	setIf(&cfg.LibvirtURI, *libvirtURI)
	setIf(&cfg.VNet.Bridge, *bridge)
	setIf(&cfg.FirewallTable, *fwTable)
	setIf(&cfg.BridgePrefix, *brPrefix)
	setIf(&cfg.MetricsListen, *metricsAt)
	if rc, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		cfg.Nameservers = network.Nameservers(rc)
	}
	if *accel != "" {
		m, err := vm.ParseAccelMode(*accel)
		if err != nil {
			return fmt.Errorf("--accel: %w", err)
		}
		cfg.Accel = m
	}
	if *subnet != "" {
		p, err := netip.ParsePrefix(*subnet)
		if err != nil {
			return fmt.Errorf("--subnet: %w", err)
		}
		cfg.VNet.Subnet = p
	}
	if *phonePort >= 0 {
		cfg.PhoneHomePort = *phonePort
	}
	cfg.StopInstancesOnExit = *stopOnExit
	if *minFree != "" {
		n, err := storage.ParseSize(*minFree)
		if err != nil {
			return fmt.Errorf("--min-free-disk: %w", err)
		}
		cfg.MinFreeDisk = n
	}
	if *readyTO > 0 {
		cfg.ReadyTimeout = *readyTO
	}
	setIf(&cfg.ReadyProbe, *readyProbe)
	if *stopTO > 0 {
		cfg.StopTimeout = *stopTO
	}
	// Test-only fault injection (see daemon/crashpoint.go); deliberately
	// not a flag or config key, so no production config can carry it.
	cfg.CrashAt = os.Getenv("LABVM_CRASH_AT")

	notifier, activation, err := systemd.FromEnvironment()
	if err != nil {
		log.Warn("systemd environment", "error", err) // the rest still works
	}
	ln, err := activation.UnixListener("labvmd.socket")
	if err != nil {
		return fmt.Errorf("socket activation: %w", err)
	}
	if ln != nil {
		if addr := ln.Addr().String(); addr != cfg.SocketPath {
			log.Warn("activated socket differs from the configured one; serving the activated one", "activated", addr, "configured", cfg.SocketPath)
			cfg.SocketPath = addr
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *removeFW {
		if err := network.RemoveFirewall(ctx, cfg.FirewallTable); err != nil {
			return fmt.Errorf("remove firewall %s: %w", cfg.FirewallTable, err)
		}
		fmt.Println("removed firewall table", cfg.FirewallTable)
		return nil
	}
	context.AfterFunc(ctx, func() { _ = notifier.Stopping() })
	d, err := daemon.New(ctx, cfg, daemon.Options{Log: log, Status: func(line string) { _ = notifier.Status(line) }})
	if err != nil {
		return err
	}
	defer func() {
		// Closing flushes and unlocks the database: a failure is worth a
		// non-zero exit.
		if cerr := d.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close: %w", cerr))
		}
	}()

	watchdogCtx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go func() {
		if err := notifier.RunWatchdog(watchdogCtx, d.Healthy); err != nil {
			log.Error("watchdog stopped: labvmd is unhealthy", "error", err)
		}
	}()
	// Stopping labvmd never stops the VMs: domains are libvirt's, and the
	// next start adopts them.
	return d.Run(ctx, ln, func() { _ = notifier.Ready() })
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func applyFile(cfg *daemon.Config, path string) error {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	setIf(&cfg.SocketPath, fc.Socket)
	setIf(&cfg.DataDir, fc.DataDir)
	setIf(&cfg.LibvirtURI, fc.LibvirtURI)
	setIf(&cfg.FirewallTable, fc.FirewallTable)
	setIf(&cfg.MetricsListen, fc.MetricsListen)
	if fc.MinFreeDisk != "" {
		n, err := storage.ParseSize(fc.MinFreeDisk)
		if err != nil {
			return fmt.Errorf("config %s: min_free_disk: %w", path, err)
		}
		cfg.MinFreeDisk = n
	}
	if fc.SocketGroup != nil {
		cfg.SocketGroup = *fc.SocketGroup
	}
	if fc.Accelerator != "" {
		m, err := vm.ParseAccelMode(fc.Accelerator)
		if err != nil {
			return fmt.Errorf("config %s: accelerator: %w", path, err)
		}
		cfg.Accel = m
	}
	if fc.DiskSize != "" {
		n, err := storage.ParseSize(fc.DiskSize)
		if err != nil {
			return fmt.Errorf("config %s: disk_size: %w", path, err)
		}
		cfg.DefaultDiskSize = n
	}
	for key, pair := range map[string]struct {
		s   string
		dst *time.Duration
	}{"ready_timeout": {fc.ReadyTimeout, &cfg.ReadyTimeout}, "stop_timeout": {fc.StopTimeout, &cfg.StopTimeout}} {
		if pair.s == "" {
			continue
		}
		d, err := time.ParseDuration(pair.s)
		if err != nil {
			return fmt.Errorf("config %s: %s: %w", path, key, err)
		}
		*pair.dst = d
	}
	if fc.PhoneHomePort != nil {
		cfg.PhoneHomePort = *fc.PhoneHomePort
	}
	if fc.DefaultVNet != nil {
		setIf(&cfg.VNet.Bridge, fc.DefaultVNet.Bridge)
		if fc.DefaultVNet.Egress != "" {
			e, err := network.ParseEgress(fc.DefaultVNet.Egress)
			if err != nil {
				return fmt.Errorf("config %s: default_vnet.egress: %w", path, err)
			}
			cfg.VNet.Egress = e
		}
		if fc.DefaultVNet.Subnet != "" {
			p, err := netip.ParsePrefix(fc.DefaultVNet.Subnet)
			if err != nil {
				return fmt.Errorf("config %s: default_vnet.subnet: %w", path, err)
			}
			cfg.VNet.Subnet = p
		}
	}
	cfg.Sizes = append(cfg.Sizes, fc.Sizes...)
	if fc.Quota != nil {
		cfg.Quota = daemon.QuotaConfig{Total: fc.Quota.Total, Families: fc.Quota.Families}
	}
	if c := fc.Cluster; c != nil {
		cc := &daemon.ClusterConfig{Name: c.Name, Host: c.Host, Endpoints: c.Etcd, CA: c.CA, Cert: c.Cert, Key: c.Key, SSH: c.SSH}
		if cc.Host == "" {
			// Host names are case-insensitive; cluster names are lower case.
			cc.Host = strings.ToLower(cfg.Host)
		}
		if c.TTL != "" {
			d, err := time.ParseDuration(c.TTL)
			if err != nil {
				return fmt.Errorf("config %s: cluster.ttl: %w", path, err)
			}
			cc.TTL = d
		}
		cfg.Cluster = cc
	}
	return nil
}

// writeUnits installs the systemd units (make install uses it).
func writeUnits(dir string) error {
	for name, body := range systemd.Units() {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, body, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Println("wrote", path)
	}
	return nil
}
