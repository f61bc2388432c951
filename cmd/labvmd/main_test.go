package main

import (
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
