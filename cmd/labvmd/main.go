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
	"strconv"
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
	Socket        string  `yaml:"socket"`
	SocketGroup   *string `yaml:"socket_group"`
	DataDir       string  `yaml:"data_dir"`
	LibvirtURI    string  `yaml:"libvirt_uri"`
	Accelerator   string  `yaml:"accelerator"`
	DiskSize      string  `yaml:"disk_size"`
	ReadyTimeout  string  `yaml:"ready_timeout"`
	StopTimeout   string  `yaml:"stop_timeout"`
	PhoneHomePort *int    `yaml:"phone_home_port"`
	FirewallTable string  `yaml:"firewall_table"`
	MinFreeDisk   string  `yaml:"min_free_disk"`
	MetricsListen string  `yaml:"metrics_listen"`
	IdleShutdown  *struct {
		Default      string   `yaml:"default"`
		Maximum      string   `yaml:"maximum"`
		CPUThreshold *float64 `yaml:"cpu_threshold"`
	} `yaml:"idle_shutdown"`
	DefaultVNet *vnetFile `yaml:"default_vnet"`
	Sizes       []vm.Size `yaml:"sizes"`
	Quota       *struct {
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

// cliFlags are labvmd's command-line flags.
type cliFlags struct {
	configPath  *string
	socket      *string
	sockGroup   *string
	dataDir     *string
	libvirtURI  *string
	accel       *string
	bridge      *string
	subnet      *string
	fwTable     *string
	brPrefix    *string
	phonePort   *optionalInt
	readyTO     *time.Duration
	readyProbe  *string
	stopTO      *time.Duration
	logLevel    *string
	minFree     *string
	metricsAt   *string
	stopOnExit  *bool
	testIdle    *time.Duration
	testCron    *bool
	testMountNS *string
	version     *bool
	units       *string
	removeFW    *bool
	man         *string
	unitsPrefix *string
}

// defineFlags registers labvmd's flags on fs (the command line in main,
// a fresh set in tests that read the help text).
func defineFlags(fs *flag.FlagSet) *cliFlags {
	return &cliFlags{
		configPath:  fs.String("config", "/etc/labvm/labvmd.yaml", "config file (optional; missing file means defaults)"),
		socket:      fs.String("socket", "", "API socket path (default /run/labvm/labvm.sock)"),
		sockGroup:   fs.String("socket-group", "", "group allowed to use the socket (default labvm)"),
		dataDir:     fs.String("data-dir", "", "data directory (default /var/lib/labvm)"),
		libvirtURI:  fs.String("libvirt-uri", "", "libvirt connection URI (default qemu:///system)"),
		accel:       fs.String("accel", "", "accelerator: auto, kvm or tcg (default auto)"),
		bridge:      fs.String("bridge", "", "default VNet's bridge (default labvm0)"),
		subnet:      fs.String("subnet", "", "default VNet's subnet CIDR (default 10.177.0.0/24)"),
		fwTable:     fs.String("firewall-table", "", "nftables table labvm owns (default labvm)"),
		brPrefix:    fs.String("bridge-prefix", "", "prefix of the bridges of VNets made through the API (default lv)"),
		phonePort:   optionalIntVar(fs, "phone-home-port", "`port` for cloud-init phone_home on the gateway; 0 disables (default 8719)"),
		readyTO:     fs.Duration("ready-timeout", 0, "how long a guest may take to become ready (default 15m)"),
		readyProbe:  fs.String("ready-probe", "", "how a guest is judged ready: agent (guest agent or phone-home; the default) or none (as soon as its domain runs: for drivers without guests such as test:///default)"),
		stopTO:      fs.Duration("stop-timeout", 0, "how long a guest may take to power off before it is destroyed (default 2m)"),
		logLevel:    fs.String("log-level", "info", "debug, info, warn or error"),
		minFree:     fs.String("min-free-disk", "", "free space the data dir must keep for create/start, e.g. 2G (default 2G)"),
		metricsAt:   fs.String("metrics-listen", "", "also serve /metrics on this TCP address, e.g. 127.0.0.1:9477, WITHOUT authentication: keep it on loopback or behind a proxy (default: only owners, on the socket)"),
		stopOnExit:  fs.Bool("stop-instances-on-exit", false, "treat SIGTERM as a host shutdown: shut running instances down cleanly (they start again at the next start); for the host's shutdown sequence, never for a plain restart"),
		testIdle:    fs.Duration("test-idle-minimum", 0, "TEST ONLY, never in production: lower the idle shutdown's 15m minimum to this (the idle policy then samples six times per minimum)"),
		testCron:    fs.Bool("test-cron-seconds", false, "TEST ONLY, never in production: schedules take a leading seconds field (six-field cron)"),
		testMountNS: fs.String("test-host-mount-ns", "", "TEST ONLY, never in production: make dataset mounts in this mount namespace (a /proc/PID/ns/mnt path) instead of PID 1's"),
		version:     fs.Bool("version", false, "print the version and exit"),
		units:       fs.String("write-units", "", "write the systemd units (labvmd.service, labvmd.socket, labvm-guests.service) into this directory and exit"),
		unitsPrefix: fs.String("units-prefix", systemd.DefaultPrefix, "with --write-units: the prefix labvmd and labvm are installed under (/usr for the Debian package)"),
		man:         fs.String("write-man", "", "write the man page labvmd.8 into this directory and exit (packaging)"),
		removeFW:    fs.Bool("remove-firewall", false, "remove the firewall table (--firewall-table) and its rules in other tables, then exit; for uninstalling"),
	}
}

func run() (err error) {
	f := defineFlags(flag.CommandLine)
	flag.Parse()
	if *f.version {
		fmt.Println("labvmd", daemon.Version)
		return nil
	}
	if *f.units != "" {
		return writeUnits(*f.units, *f.unitsPrefix)
	}
	if *f.man != "" {
		return writeMan(*f.man)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if systemd.JournalAttached() {
		// Under systemd, each attribute becomes a journal field of its own
		// (journalctl -u labvmd INSTANCE=alice-dev).
		handler = systemd.NewJournalHandler(level, handler)
	}
	log := slog.New(handler)
	slog.SetDefault(log)

	cfg := daemon.DefaultConfig()
	if err := applyFile(&cfg, *f.configPath); err != nil {
		return err
	}
	setIf(&cfg.SocketPath, *f.socket)
	setIf(&cfg.SocketGroup, *f.sockGroup)
	setIf(&cfg.DataDir, *f.dataDir)
	setIf(&cfg.LibvirtURI, *f.libvirtURI)
	setIf(&cfg.VNet.Bridge, *f.bridge)
	setIf(&cfg.FirewallTable, *f.fwTable)
	setIf(&cfg.BridgePrefix, *f.brPrefix)
	setIf(&cfg.MetricsListen, *f.metricsAt)
	if rc, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		cfg.Nameservers = network.Nameservers(rc)
	}
	if *f.accel != "" {
		m, err := vm.ParseAccelMode(*f.accel)
		if err != nil {
			return fmt.Errorf("--accel: %w", err)
		}
		cfg.Accel = m
	}
	if *f.subnet != "" {
		p, err := netip.ParsePrefix(*f.subnet)
		if err != nil {
			return fmt.Errorf("--subnet: %w", err)
		}
		cfg.VNet.Subnet = p
	}
	if f.phonePort.set {
		cfg.PhoneHomePort = f.phonePort.v
	}
	cfg.StopInstancesOnExit = *f.stopOnExit
	if *f.minFree != "" {
		n, err := storage.ParseSize(*f.minFree)
		if err != nil {
			return fmt.Errorf("--min-free-disk: %w", err)
		}
		cfg.MinFreeDisk = n
	}
	if *f.readyTO > 0 {
		cfg.ReadyTimeout = *f.readyTO
	}
	setIf(&cfg.ReadyProbe, *f.readyProbe)
	if *f.stopTO > 0 {
		cfg.StopTimeout = *f.stopTO
	}
	cfg.TestIdleMinimum = *f.testIdle
	cfg.TestCronSeconds = *f.testCron
	cfg.TestHostMountNS = *f.testMountNS
	// Test-only fault injection (see daemon/crashpoint.go); deliberately
	// not a flag or config key, so no production config can carry it.
	cfg.CrashAt = os.Getenv("LABVM_CRASH_AT")

	notifier, activation, err := systemd.FromEnvironment()
	if err != nil {
		log.Warn("systemd environment", "error", err) // the rest still works
	}
	ln, err := activation.APIListener(systemd.APISocketName)
	if err != nil {
		return fmt.Errorf("socket activation: %w", err)
	}
	if names := activation.Names(); len(names) > 1 {
		log.Warn("socket activation: systemd passed several sockets; serving the one named "+systemd.APISocketName+", the others are closed", "passed", names)
	}
	if ln != nil {
		if addr := ln.Addr().String(); addr != cfg.SocketPath {
			log.Warn("activated socket differs from the configured one; serving the activated one", "activated", addr, "configured", cfg.SocketPath)
			cfg.SocketPath = addr
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *f.removeFW {
		if err := network.RemoveFirewall(ctx, cfg.FirewallTable); err != nil {
			return fmt.Errorf("remove firewall %s: %w", cfg.FirewallTable, err)
		}
		if err := (network.FirewallRegistry{Dir: network.DefaultFirewallOwners}).Forget(cfg.FirewallTable); err != nil {
			return err
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

	// Where logind runs, a delay lock lets a host shutdown stop instances
	// cleanly before the system goes down; without it, this logs once.
	// A stop it began runs to its bound even if SIGTERM follows (systemd
	// stops labvmd during that same shutdown); labvmd exits after it.
	inhibitCtx, stopInhibit := context.WithCancel(ctx)
	inhibitDone := make(chan struct{})
	defer func() { stopInhibit(); <-inhibitDone }()
	go func() {
		defer close(inhibitDone)
		stopAll := func(ctx context.Context) { d.HostShutdown(context.WithoutCancel(ctx)) }
		if err := systemd.WatchShutdown(inhibitCtx, log, stopAll); err != nil {
			log.Warn("shutdown inhibitor", "error", err)
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
	if fc.IdleShutdown != nil {
		if err := applyIdle(cfg, fc.IdleShutdown.Default, fc.IdleShutdown.Maximum, fc.IdleShutdown.CPUThreshold); err != nil {
			return fmt.Errorf("config %s: idle_shutdown.%w", path, err)
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

// applyIdle reads the idle_shutdown section; the bounds are checked by
// daemon.Config.Validate, once the test-only minimum is known too.
func applyIdle(cfg *daemon.Config, def, maximum string, cpu *float64) error {
	if def != "" && def != "off" {
		d, err := vm.ParseDays(def)
		if err != nil {
			return fmt.Errorf("default: %w (a duration such as 2h or 1d, or off)", err)
		}
		cfg.IdleDefault = d
	}
	if maximum != "" {
		d, err := vm.ParseDays(maximum)
		if err != nil {
			return fmt.Errorf("maximum: %w (a duration such as 1d or 3d)", err)
		}
		cfg.IdleMaximum = d
	}
	if cpu != nil {
		cfg.IdleCPUThreshold = *cpu
	}
	return nil
}

// writeUnits installs the systemd units for binaries under prefix
// (make install and make deb use it).
func writeUnits(dir, prefix string) error {
	for name, body := range systemd.UnitsFor(prefix) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, body, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Println("wrote", path)
	}
	return nil
}

// optionalInt is an int flag that knows whether it was given, so a value
// from the config file stays unless the flag overrides it. Its default
// prints as empty, which the flag package leaves out of the help: the
// usage text states the real default instead of a sentinel such as -1.
type optionalInt struct {
	v   int
	set bool
}

func optionalIntVar(fs *flag.FlagSet, name, usage string) *optionalInt {
	o := &optionalInt{}
	fs.Var(o, name, usage)
	return o
}

func (o *optionalInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.v)
}

func (o *optionalInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a number")
	}
	if n < 0 {
		return errors.New("must not be negative")
	}
	o.v, o.set = n, true
	return nil
}
