package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
