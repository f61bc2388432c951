package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// seedInstances writes n stopped instance records shaped like the ones
// create makes, with their disk files under dataDir (stopped, with a
// disk, so the daemon's start has nothing to reconcile).
func seedInstances(tb testing.TB, dataDir string, n int) func(tx *store.Tx) error {
	paths := lifecycle.Paths{DataDir: dataDir}
	return func(tx *store.Tx) error {
		created := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("%08x5eed%04x", i*2654435761%(1<<32), i%(1<<16))
			if err := os.MkdirAll(paths.Dir(id), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(paths.Disk(id), nil, 0o600); err != nil {
				return err
			}
			ip := netip.AddrFrom4([4]byte{10, 213, byte((i + 2) >> 8), byte(i + 2)})
			if err := tx.CreateInstance(vm.Instance{
				ID: id, Name: fmt.Sprintf("bench-%05d", i),
				Size:  vm.Size{Name: "Standard_B1s", Family: "standardBSFamily", VCPUs: 1, MemoryMiB: 1024},
				Image: "tiny", ImageDigest: fmt.Sprintf("%064x", 1), DiskSize: 120 << 30,
				VNet: "default", Subnet: "default", Bridge: "labvm0", IP: ip, Prefix: 16,
				Gateway: netip.MustParseAddr("10.213.0.1"), MAC: fmt.Sprintf("52:54:0a:d5:%02x:%02x", byte(i>>8), byte(i)),
				DNS:         []netip.Addr{netip.MustParseAddr("10.255.255.53")},
				Creator:     "root",
				SSHHostKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILXYXaqeEzqkaaA/dxIBMEazm4atp+lQHY3p7HS3JIwn"},
				State:       vm.StateStopped, Domain: "labvm-bench-" + id[:8], Accel: vm.AccelTCG, Host: "bench",
				CreatedAt: created.Add(time.Duration(i) * time.Second), UpdatedAt: created,
			}); err != nil {
				return err
			}
		}
		return nil
	}
}

// BenchmarkListInstances is GET /v1/instances at 10,000 instances through
// the Go client (daemon and decoding both in this process): the summary
// view `labvm list` prints, and the full view of `labvm list -o json`.
// `make bench` measures the CLI's whole command; this is the part of it a
// change to the list path moves.
func BenchmarkListInstances(b *testing.B) {
	const n = 10000
	dir := b.TempDir()
	td := daemontest.NewAt(b, dir, daemontest.NewFakeHypervisor(), func(c *daemon.Config) {
		c.VNet.Subnet = netip.MustParsePrefix("10.213.0.0/16")
	}, seedInstances(b, filepath.Join(dir, "data"), n))
	ctx := context.Background()
	b.Run("summary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			list, err := td.Client.InstanceSummaries(ctx, client.ListOptions{})
			if err != nil || len(list) != n {
				b.Fatalf("%d instances, %v", len(list), err)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			list, err := td.Client.Instances(ctx)
			if err != nil || len(list) != n {
				b.Fatalf("%d instances, %v", len(list), err)
			}
		}
	})
}

// TestInstanceListViews: the summary view says what the full view says
// about each instance, in the same (name) order and under the same
// filters; the full view streams valid JSON; an unknown view is refused.
func TestInstanceListViews(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx := context.Background()
	for _, name := range []string{"charlie", "alpha", "bravo"} {
		if _, err := td.Create(t, daemontest.TinyReq(name)); err != nil {
			t.Fatal(err)
		}
	}
	full, err := td.Client.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := td.Client.InstanceSummaries(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(full) != 3 || len(sum) != 3 {
		t.Fatalf("full %d, summary %d instances; want 3", len(full), len(sum))
	}
	for i, f := range full {
		want := api.InstanceSummary{ID: f.ID, Name: f.Name, State: f.State, Size: f.Size.Name, Image: f.Image, IP: f.IP,
			Owner: f.Owner, JobsRunning: f.JobsRunning, JobsQueued: f.JobsQueued, CreatedAt: f.CreatedAt}
		if sum[i] != want {
			t.Errorf("summary %d = %+v, full view says %+v", i, sum[i], want)
		}
		if f.IP == "" || f.State != api.StateRunning {
			t.Errorf("%s: state %s at %q", f.Name, f.State, f.IP)
		}
	}
	if full[0].Name != "alpha" || full[2].Name != "charlie" {
		t.Errorf("not in name order: %s, %s, %s", full[0].Name, full[1].Name, full[2].Name)
	}
	me, err := user.Current() // the instances' owner: root under make test
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		o    client.ListOptions
		want int
	}{{client.ListOptions{Owner: me.Username}, 3}, {client.ListOptions{Owner: "nobody-at-all"}, 0}, {client.ListOptions{Mine: true}, 3}} {
		s, err := td.Client.InstanceSummaries(ctx, tt.o)
		if err != nil || len(s) != tt.want {
			t.Errorf("summaries %+v: %d, %v; want %d", tt.o, len(s), err, tt.want)
		}
		f, err := td.Client.InstancesFiltered(ctx, tt.o)
		if err != nil || len(f) != tt.want {
			t.Errorf("instances %+v: %d, %v; want %d", tt.o, len(f), err, tt.want)
		}
	}
	raw, err := td.Client.InstancesJSON(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var decoded []api.Instance
	if err := json.Unmarshal(raw, &decoded); err != nil || !reflect.DeepEqual(decoded, full) {
		t.Errorf("raw full view: %v, %d instances", err, len(decoded))
	}

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", td.Cfg.SocketPath)
	}}}
	for _, q := range []string{"view=compact", "view=SUMMARY", "view="} {
		resp, err := hc.Get("http://labvmd/v1/instances?" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ok := resp.StatusCode == 400 && strings.Contains(string(body), string(api.CodeInvalidArgument))
		if q == "view=" { // empty is the default view
			ok = resp.StatusCode == 200
		}
		if !ok {
			t.Errorf("?%s: %d %s", q, resp.StatusCode, body)
		}
	}
}

// TestHealthyNeedsTheStore: the watchdog's check reads the store (not
// the cache of instances), so a store that no longer answers fails it.
func TestHealthyNeedsTheStore(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx := context.Background()
	if err := td.Healthy(ctx); err != nil {
		t.Fatalf("healthy daemon: %v", err)
	}
	if err := td.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := td.Healthy(ctx); err == nil || !strings.Contains(err.Error(), "state store") {
		t.Fatalf("closed store: %v, want a state store error", err)
	}
}
