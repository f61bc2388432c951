package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/test/etcdtest"
)

// clusterHost is one labvmd of a test cluster: its own socket, bridge and
// firewall, and a labvmd.yaml joining it to the test's etcd with its own
// certificate.
type clusterHost struct {
	*labvmd
	name string
}

// newClusterHostIn starts a clustered labvmd in the network namespace
// netns ("" for the host's): its bridges, firewall and etcd connections
// are there; its socket is a path, reached from anywhere. sshURL, when
// set, is the address it publishes for creates placed on it. extra are
// more labvmd flags; without a --libvirt-uri of its own it runs on the
// libvirt test driver (simulated domains, no guest).
func newClusterHostIn(t *testing.T, netns string, e *etcdtest.Cluster, cluster, name, sshURL string, extra ...string) *clusterHost {
	t.Helper()
	cert, key := e.PKI.Issue(t, name)
	cfg := fmt.Sprintf("cluster:\n  name: %s\n  host: %s\n  ttl: 2s\n  ca: %s\n  cert: %s\n  key: %s\n  etcd: [%s]\n",
		cluster, name, e.PKI.CAFile, cert, key, strings.Join(e.Endpoints(), ", "))
	if sshURL != "" {
		cfg += "  ssh: " + sshURL + "\n"
	}
	path := filepath.Join(t.TempDir(), "labvmd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", path}
	if !slices.Contains(extra, "--libvirt-uri") {
		args = append(args, "--libvirt-uri", "test:///default", "--ready-probe", "none")
	}
	args = append(args, extra...)
	d := newDaemon(t, args...)
	if netns != "" {
		d.wrap = []string{"ip", "netns", "exec", netns}
	}
	d.start()
	return &clusterHost{labvmd: d, name: name}
}

// hosts is `labvm hosts -o json` through h.
func (h *clusterHost) hosts() map[string]api.ClusterHost {
	var list []api.ClusterHost
	h.jsonOut(&list, "hosts")
	out := map[string]api.ClusterHost{}
	for _, x := range list {
		out[x.Name] = x
	}
	return out
}

// clusterList is `labvm list --cluster -o json` through h, as
// NAME@HOST(host state) → state; a failed call fails t.
func (h *clusterHost) clusterList() map[string]string {
	h.t.Helper()
	out, err := h.tryClusterList()
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// tryClusterList is clusterList returning its error (for retries).
func (h *clusterHost) tryClusterList() (map[string]string, error) {
	r := h.labvm("list", "--cluster", "-o", "json")
	if r.code != 0 {
		return nil, fmt.Errorf("labvm list --cluster on %s: exit %d: %s", h.name, r.code, r.stderr)
	}
	var list []api.ClusterInstance
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, i := range list {
		out[i.Name+"@"+i.Host+"("+string(i.HostState)+")"] = string(i.State)
	}
	return out, nil
}

// within retries check for up to d, failing t with its last error.
func within(t *testing.T, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
