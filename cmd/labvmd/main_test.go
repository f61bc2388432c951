package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/systemd"
)

// TestSocketPathsAgree: the socket systemd listens on, the one labvmd
// binds by default and the one labvm dials are the same path. Only cmd/
// sees all three packages, so the check lives here.
func TestSocketPathsAgree(t *testing.T) {
	unit := string(systemd.Units()["labvmd.socket"])
	if !strings.Contains(unit, "\nListenStream="+client.DefaultSocket+"\n") {
		t.Errorf("labvmd.socket does not listen on the client's default %s:\n%s", client.DefaultSocket, unit)
	}
	if got := daemon.DefaultConfig().SocketPath; got != client.DefaultSocket {
		t.Errorf("labvmd binds %s by default, labvm dials %s", got, client.DefaultSocket)
	}
}

// TestMetricsListenFromFile: metrics_listen in labvmd.yaml reaches the
// daemon's config; without it there is no TCP listener.
func TestMetricsListenFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "labvmd.yaml")
	if err := os.WriteFile(path, []byte("metrics_listen: 127.0.0.1:9477\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := daemon.DefaultConfig()
	if cfg.MetricsListen != "" {
		t.Fatalf("default MetricsListen = %q, want none", cfg.MetricsListen)
	}
	if err := applyFile(&cfg, path); err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsListen != "127.0.0.1:9477" {
		t.Errorf("MetricsListen = %q, want 127.0.0.1:9477", cfg.MetricsListen)
	}
}

// TestIdleShutdownFromFile: the idle_shutdown section reaches the config,
// and values outside the bounds are refused when the daemon checks it.
func TestIdleShutdownFromFile(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		def     time.Duration
		maximum time.Duration
		cpu     float64
		bad     string
	}{
		{yaml: "idle_shutdown:\n  default: 2h\n  maximum: 1d\n  cpu_threshold: 10\n", def: 2 * time.Hour, maximum: 24 * time.Hour, cpu: 10},
		{yaml: "idle_shutdown:\n  default: off\n", def: 0},
		{yaml: "idle_shutdown:\n  default: 10m\n", bad: "idle_shutdown.default"},
		{yaml: "idle_shutdown:\n  maximum: 4d\n", bad: "idle_shutdown.maximum"},
		{yaml: "idle_shutdown:\n  default: 2d\n  maximum: 1d\n", bad: "idle_shutdown.default"},
		{yaml: "idle_shutdown:\n  cpu_threshold: 150\n", bad: "cpu_threshold"},
		{yaml: "idle_shutdown:\n  default: soon\n", bad: "idle_shutdown.default"},
		{yaml: "idle_shutdown:\n  idle: 1h\n", bad: "field idle not found"},
	} {
		path := filepath.Join(t.TempDir(), "labvmd.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := daemon.DefaultConfig()
		err := applyFile(&cfg, path)
		if err == nil {
			err = cfg.Validate()
		}
		switch {
		case tc.bad != "":
			if err == nil || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("%q: %v, want an error about %s", tc.yaml, err, tc.bad)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case cfg.IdleDefault != tc.def || cfg.IdleMaximum != tc.maximum || cfg.IdleCPUThreshold != tc.cpu:
			t.Errorf("%q: default %s, maximum %s, cpu %g", tc.yaml, cfg.IdleDefault, cfg.IdleMaximum, cfg.IdleCPUThreshold)
		}
	}
}

// TestHelpStatesEachDefaultOnce: no flag's help line carries two
// "(default …)" notes or a sentinel default such as -1 (it once printed
// "(default 8719) (default -1)" for -phone-home-port).
func TestHelpStatesEachDefaultOnce(t *testing.T) {
	fs := flag.NewFlagSet("labvmd", flag.ContinueOnError)
	defineFlags(fs)
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.PrintDefaults()
	if !strings.Contains(help.String(), "-phone-home-port port\n") {
		t.Errorf("help does not show -phone-home-port with its placeholder:\n%s", help.String())
	}
	var usage []string // one flag's text, joined
	for _, line := range strings.Split(help.String(), "\n") {
		if strings.HasPrefix(line, "  -") {
			usage = append(usage, line)
		} else if len(usage) > 0 {
			usage[len(usage)-1] += line
		}
	}
	for _, u := range usage {
		if n := strings.Count(u, "(default"); n > 1 || strings.Contains(u, "(default -1)") {
			t.Errorf("flag help states its default badly: %q", u)
		}
	}
}

// TestPhoneHomePortFlag: the flag overrides the config file only when
// given, takes 0 (off), and refuses negative numbers.
func TestPhoneHomePortFlag(t *testing.T) {
	tests := []struct {
		args    []string
		wantSet bool
		want    int
		wantErr string
	}{
		{args: nil},
		{args: []string{"-phone-home-port", "0"}, wantSet: true, want: 0},
		{args: []string{"-phone-home-port", "9000"}, wantSet: true, want: 9000},
		{args: []string{"-phone-home-port", "-1"}, wantErr: "must not be negative"},
		{args: []string{"-phone-home-port", "x"}, wantErr: "not a number"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("labvmd", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f := defineFlags(fs)
			err := fs.Parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parse = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.phonePort.set != tt.wantSet || f.phonePort.v != tt.want {
				t.Errorf("phonePort = %+v, want set=%v %d", *f.phonePort, tt.wantSet, tt.want)
			}
		})
	}
}

// TestManPageListsEveryFlag: labvmd.8 is generated from the flags, so
// each one is documented, escaped for roff.
func TestManPageListsEveryFlag(t *testing.T) {
	fs := flag.NewFlagSet("labvmd", flag.ContinueOnError)
	defineFlags(fs)
	page := manPage(fs, time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC))
	if !strings.HasPrefix(page, `.TH LABVMD 8 "2026-01-02"`) {
		t.Errorf("header: %q", page[:min(len(page), 60)])
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(page, ".B \\-\\-"+strings.ReplaceAll(f.Name, "-", `\-`)) {
			t.Errorf("man page lacks --%s", f.Name)
		}
	})
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "'") {
			t.Errorf("line would be read as a roff request: %q", line)
		}
	}
}

// TestClusterFromFile: the cluster section reaches the daemon's config
// (the host defaulting to this host's name), and bad values are refused
// with the key named.
func TestClusterFromFile(t *testing.T) {
	write := func(body string) string {
		path := filepath.Join(t.TempDir(), "labvmd.yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cfg := daemon.DefaultConfig()
	if cfg.Cluster != nil {
		t.Fatal("a cluster by default")
	}
	err := applyFile(&cfg, write("cluster:\n  name: lab1\n  etcd: [https://etcd1:2379, https://etcd2:2379]\n  ca: /ca\n  cert: /c\n  key: /k\n  ttl: 5s\n  ssh: ssh://alice@node3:2222\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if c == nil || c.Name != "lab1" || c.Host != strings.ToLower(cfg.Host) || len(c.Endpoints) != 2 || c.CA != "/ca" || c.TTL.String() != "5s" || c.SSH != "ssh://alice@node3:2222" {
		t.Fatalf("cluster config %+v", c)
	}
	tests := []struct{ body, want string }{
		{"cluster:\n  ttl: soon\n", "cluster.ttl"},
		{"cluster:\n  nmae: lab1\n", "nmae"},
	}
	for _, tt := range tests {
		cfg := daemon.DefaultConfig()
		if err := applyFile(&cfg, write(tt.body)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want an error naming %q", tt.body, err, tt.want)
		}
	}
	cfg = daemon.DefaultConfig()
	if err := applyFile(&cfg, write("cluster:\n  name: lab1\n  host: node3\n  etcd: [http://etcd1:2379]\n  ca: /ca\n  cert: /c\n  key: /k\n")); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "plain http is refused") {
		t.Fatalf("Validate with plain http etcd: %v", err)
	}
}
