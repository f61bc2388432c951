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
