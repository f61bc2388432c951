package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/vm"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// newDaemon runs a labvmd with a total and a family core limit.
func newDaemon(t *testing.T) *daemontest.Daemon {
	t.Helper()
	return daemontest.NewWith(t, daemontest.NewFakeHypervisor(), func(c *daemon.Config) {
		c.Quota = daemon.QuotaConfig{Total: 8, Families: map[string]int{"standardBSFamily": 4}}
	}, nil)
}

func mustCreate(t *testing.T, td *daemontest.Daemon, name string) vm.Instance {
	t.Helper()
	if _, err := td.Create(t, daemontest.TinyReq(name)); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	inst, err := td.Lifecycle().InstanceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// settle waits until no operation is in flight. A client sees an
// operation done a moment before the engine forgets it and counts it
// (ops.Finish publishes the end first), so a scrape right after a wait
// may still see it running.
func settle(t *testing.T, td *daemontest.Daemon) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for td.Ops().Running() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations still in flight", td.Ops().Running())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sample is one gathered value by metric name and labels ("" for none).
func sample(t *testing.T, td *daemontest.Daemon, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := td.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelsEqual(m.GetLabel(), labels) {
				switch {
				case m.Gauge != nil:
					return m.Gauge.GetValue(), true
				case m.Counter != nil:
					return m.Counter.GetValue(), true
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount()), true
				}
			}
		}
	}
	return 0, false
}

func labelsEqual(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
			return false
		}
	}
	return true
}

// TestStateAtScrape: what a scrape reports is the daemon's state as it is
// then (instances, quota, jobs, operations, libvirt, the store), read
// from a real daemon over the fake hypervisor.
func TestStateAtScrape(t *testing.T) {
	td := newDaemon(t)
	reg := td.Metrics().Gatherer()
	a := mustCreate(t, td, "alpha")
	mustCreate(t, td, "beta")
	op, err := td.Client.Stop(t.Context(), "beta")
	if err == nil {
		_, err = td.Client.Wait(t.Context(), op.ID, nil)
	}
	if err != nil {
		t.Fatalf("stop beta: %v", err)
	}
	settle(t, td)

	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP labvm_quota_used_cores Cores taken by all instances, whatever their state.
# TYPE labvm_quota_used_cores gauge
labvm_quota_used_cores 2
# HELP labvm_quota_limit_cores Cores allowed in total; absent when there is no limit.
# TYPE labvm_quota_limit_cores gauge
labvm_quota_limit_cores 8
# HELP labvm_quota_family_limit_cores Cores allowed to a size family; absent for a family without a limit.
# TYPE labvm_quota_family_limit_cores gauge
labvm_quota_family_limit_cores{family="standardBSFamily"} 4
# HELP labvm_jobs Jobs by state: queued, or running (started included) in their instances.
# TYPE labvm_jobs gauge
labvm_jobs{state="queued"} 0
labvm_jobs{state="running"} 0
# HELP labvm_operations_in_flight Operations running now.
# TYPE labvm_operations_in_flight gauge
labvm_operations_in_flight 0
# HELP labvm_libvirt_up 1 when libvirt answered this scrape, 0 when it did not.
# TYPE labvm_libvirt_up gauge
labvm_libvirt_up 1
# HELP labvm_sessions_open Guest sessions open through labvmd now: ssh, tunnels, forwards, open, the console.
# TYPE labvm_sessions_open gauge
labvm_sessions_open 0
# HELP labvm_idle_stops_total Instances the idle shutdown stopped.
# TYPE labvm_idle_stops_total counter
labvm_idle_stops_total 0
# HELP labvm_schedule_actions_total Times a schedule came due, by action (start, stop) and outcome (started: an operation began; skipped: the instance was busy or already there).
# TYPE labvm_schedule_actions_total counter
labvm_schedule_actions_total{action="start",outcome="skipped"} 0
labvm_schedule_actions_total{action="start",outcome="started"} 0
labvm_schedule_actions_total{action="stop",outcome="skipped"} 0
labvm_schedule_actions_total{action="stop",outcome="started"} 0
`), "labvm_quota_used_cores", "labvm_quota_limit_cores", "labvm_quota_family_limit_cores", "labvm_jobs",
		"labvm_operations_in_flight", "labvm_libvirt_up",
		// The policies' series are there, at 0, before anything happened:
		// a dashboard's rate() needs a series to start from.
		"labvm_sessions_open", "labvm_idle_stops_total", "labvm_schedule_actions_total"); err != nil {
		t.Error(err)
	}

	for _, c := range []struct {
		state  vm.State
		family string
		want   float64
	}{
		{vm.StateRunning, "standardBSFamily", 1},
		{vm.StateStopped, "standardBSFamily", 1},
		{vm.StateSetupFailed, "standardBSFamily", 0},
		// Families without instances read 0, not nothing.
		{vm.StateRunning, "standardDSv2Family", 0},
	} {
		got, ok := sample(t, td, "labvm_instances", map[string]string{"state": c.state.String(), "family": c.family})
		if !ok || got != c.want {
			t.Errorf("labvm_instances{state=%q,family=%q} = %v (present %v), want %v", c.state, c.family, got, ok, c.want)
		}
	}
	if got, _ := sample(t, td, "labvm_quota_family_used_cores", map[string]string{"family": "standardBSFamily"}); got != 2 {
		t.Errorf("labvm_quota_family_used_cores{family=standardBSFamily} = %v, want 2", got)
	}
	if _, ok := sample(t, td, "labvm_quota_family_limit_cores", map[string]string{"family": "standardDSv2Family"}); ok {
		t.Error("labvm_quota_family_limit_cores reported for a family without a limit")
	}
	if got, _ := sample(t, td, "labvm_store_size_bytes", nil); got < 4096 {
		t.Errorf("labvm_store_size_bytes = %v, want the database's size", got)
	}

	// Deleting alpha is seen at the next scrape: nothing is cached.
	op, err = td.Client.Delete(t.Context(), a.Name)
	if err == nil {
		_, err = td.Client.Wait(t.Context(), op.ID, nil)
	}
	if err != nil {
		t.Fatalf("delete alpha: %v", err)
	}
	settle(t, td)
	if got, _ := sample(t, td, "labvm_instances", map[string]string{"state": "Running", "family": "standardBSFamily"}); got != 0 {
		t.Errorf("after delete, labvm_instances{Running} = %v, want 0", got)
	}
	if got, _ := sample(t, td, "labvm_quota_used_cores", nil); got != 1 {
		t.Errorf("after delete, labvm_quota_used_cores = %v, want 1", got)
	}
}

// TestOperationsCounted: every operation is counted by kind and outcome
// as it ends, with its duration and its steps'.
func TestOperationsCounted(t *testing.T) {
	hv := daemontest.NewFakeHypervisor()
	td := daemontest.New(t, hv, nil)
	m := td.Metrics()
	mustCreate(t, td, "one")
	mustCreate(t, td, "two")
	hv.StartErr = errors.New("qemu: could not open backing file")
	if _, err := td.Create(t, daemontest.TinyReq("doomed")); err == nil {
		t.Fatal("create with a failing hypervisor succeeded")
	}
	settle(t, td)

	if got := testutil.ToFloat64(m.Operations().WithLabelValues("create", "succeeded")); got != 2 {
		t.Errorf("labvm_operations_total{create,succeeded} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.Operations().WithLabelValues("create", "failed")); got != 1 {
		t.Errorf("labvm_operations_total{create,failed} = %v, want 1", got)
	}
	if got, _ := sample(t, td, "labvm_operation_duration_seconds", map[string]string{"kind": "create", "outcome": "succeeded"}); got != 2 {
		t.Errorf("labvm_operation_duration_seconds{create,succeeded} has %v observations, want 2", got)
	}
	for _, step := range []string{"disk", "seed", "boot", "wait-guest"} {
		if got, _ := sample(t, td, "labvm_operation_step_duration_seconds", map[string]string{"kind": "create", "step": step}); got < 2 {
			t.Errorf("labvm_operation_step_duration_seconds{create,%s} has %v observations, want the two successful creates' at least", step, got)
		}
	}
}

// TestInstanceLibvirtCounters: each running instance's libvirt counters
// carry its labvm name and its user; a stopped instance has none, and
// libvirt gone is labvm_libvirt_up 0 with no counters rather than an
// error.
func TestInstanceLibvirtCounters(t *testing.T) {
	hv := daemontest.NewFakeHypervisor()
	td := daemontest.New(t, hv, nil)
	inst := mustCreate(t, td, "busy")
	hv.SetStats(inst.Domain, vm.DomainStats{
		CPUTime:     90 * time.Second,
		MemoryBytes: 1 << 30, MaxMemoryBytes: 1 << 30, RSSBytes: 300 << 20,
		Disks: []vm.DiskStats{
			{Device: "vda", ReadBytes: 4096, WriteBytes: 8192, ReadRequests: 1, WriteRequests: 2,
				AllocationBytes: 3 << 30, CapacityBytes: 10 << 30, PhysicalBytes: 3<<30 + 1<<20},
			// The seed: libvirt gave no allocation, so none is reported.
			{Device: "sda", ReadBytes: 1, CapacityBytes: 1 << 20, PhysicalBytes: 1 << 20},
		},
		NICs: []vm.NICStats{{Device: "lvp0123456789ab", RxBytes: 100, TxBytes: 200, RxPackets: 3, TxPackets: 4}},
	})
	owner := inst.Owner()
	expected := fmt.Sprintf(`
# HELP libvirt_domain_info_cpu_time_seconds_total CPU time used by the instance's QEMU, all vCPUs together.
# TYPE libvirt_domain_info_cpu_time_seconds_total counter
libvirt_domain_info_cpu_time_seconds_total{instance="busy",owner="%[1]s"} 90
# HELP libvirt_domain_info_memory_usage_bytes Memory of the guest as the balloon reports it.
# TYPE libvirt_domain_info_memory_usage_bytes gauge
libvirt_domain_info_memory_usage_bytes{instance="busy",owner="%[1]s"} 1.073741824e+09
# HELP libvirt_domain_memory_stats_rss_bytes Host memory held by the instance's QEMU (resident set).
# TYPE libvirt_domain_memory_stats_rss_bytes gauge
libvirt_domain_memory_stats_rss_bytes{instance="busy",owner="%[1]s"} 3.145728e+08
# HELP libvirt_domain_block_stats_read_bytes_total Bytes read from a block device.
# TYPE libvirt_domain_block_stats_read_bytes_total counter
libvirt_domain_block_stats_read_bytes_total{instance="busy",owner="%[1]s",target_device="sda"} 1
libvirt_domain_block_stats_read_bytes_total{instance="busy",owner="%[1]s",target_device="vda"} 4096
# HELP libvirt_domain_block_stats_write_bytes_total Bytes written to a block device.
# TYPE libvirt_domain_block_stats_write_bytes_total counter
libvirt_domain_block_stats_write_bytes_total{instance="busy",owner="%[1]s",target_device="sda"} 0
libvirt_domain_block_stats_write_bytes_total{instance="busy",owner="%[1]s",target_device="vda"} 8192
# HELP libvirt_domain_block_stats_allocation Offset of the highest sector written on a block device: how far its image has grown, in bytes.
# TYPE libvirt_domain_block_stats_allocation gauge
libvirt_domain_block_stats_allocation{instance="busy",owner="%[1]s",target_device="vda"} 3.221225472e+09
# HELP libvirt_domain_block_stats_capacity_bytes Size of a block device as the guest sees it.
# TYPE libvirt_domain_block_stats_capacity_bytes gauge
libvirt_domain_block_stats_capacity_bytes{instance="busy",owner="%[1]s",target_device="sda"} 1.048576e+06
libvirt_domain_block_stats_capacity_bytes{instance="busy",owner="%[1]s",target_device="vda"} 1.073741824e+10
# HELP libvirt_domain_block_stats_physicalsize_bytes Size on the host of the file behind a block device.
# TYPE libvirt_domain_block_stats_physicalsize_bytes gauge
libvirt_domain_block_stats_physicalsize_bytes{instance="busy",owner="%[1]s",target_device="sda"} 1.048576e+06
libvirt_domain_block_stats_physicalsize_bytes{instance="busy",owner="%[1]s",target_device="vda"} 3.222274048e+09
# HELP libvirt_domain_interface_stats_receive_bytes_total Bytes received by the guest on an interface (the tap's transmit).
# TYPE libvirt_domain_interface_stats_receive_bytes_total counter
libvirt_domain_interface_stats_receive_bytes_total{instance="busy",owner="%[1]s",target_device="lvp0123456789ab"} 100
# HELP libvirt_domain_interface_stats_transmit_bytes_total Bytes sent by the guest on an interface.
# TYPE libvirt_domain_interface_stats_transmit_bytes_total counter
libvirt_domain_interface_stats_transmit_bytes_total{instance="busy",owner="%[1]s",target_device="lvp0123456789ab"} 200
`, owner)
	names := []string{"libvirt_domain_info_cpu_time_seconds_total", "libvirt_domain_info_memory_usage_bytes",
		"libvirt_domain_memory_stats_rss_bytes", "libvirt_domain_block_stats_read_bytes_total",
		"libvirt_domain_block_stats_write_bytes_total", "libvirt_domain_block_stats_allocation",
		"libvirt_domain_block_stats_capacity_bytes", "libvirt_domain_block_stats_physicalsize_bytes",
		"libvirt_domain_interface_stats_receive_bytes_total",
		"libvirt_domain_interface_stats_transmit_bytes_total"}
	if err := testutil.GatherAndCompare(td.Metrics().Gatherer(), strings.NewReader(expected), names...); err != nil {
		t.Error(err)
	}

	// A domain no instance record knows is not labvm's to report.
	hv.AddDomain("labvm-stray-00000000", "00000000deadbeef")
	hv.SetStats("labvm-stray-00000000", vm.DomainStats{CPUTime: time.Second})
	if n, err := testutil.GatherAndCount(td.Metrics().Gatherer(), "libvirt_domain_info_cpu_time_seconds_total"); err != nil || n != 1 {
		t.Errorf("cpu time series = %d, %v; want 1 (the stray domain left out)", n, err)
	}

	hv.SetDown(true)
	if got, _ := sample(t, td, "labvm_libvirt_up", nil); got != 0 {
		t.Errorf("labvm_libvirt_up with libvirtd gone = %v, want 0", got)
	}
	if n, err := testutil.GatherAndCount(td.Metrics().Gatherer(), names...); err != nil || n != 0 {
		t.Errorf("libvirt counters with libvirtd gone: %d series, %v; want none", n, err)
	}
	hv.SetDown(false)
	if got, _ := sample(t, td, "labvm_libvirt_up", nil); got != 1 {
		t.Errorf("labvm_libvirt_up with libvirtd back = %v, want 1", got)
	}
}

// TestServeTCP: the TCP listener answers GET /metrics in the text format
// and nothing else, and stops when its context ends.
func TestServeTCP(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- td.Metrics().Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
		!strings.Contains(string(body), "\nlabvm_libvirt_up 1\n") {
		t.Errorf("GET /metrics = %d %q:\n%.300s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for _, path := range []string{"/", "/v1/instances"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on the metrics listener = %d, want 404", path, resp.StatusCode)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want nil after its context ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// TestMetricsListenConfig: a daemon told to listen on TCP starts and
// stops with it; a bad address is refused at start.
func TestMetricsListenConfig(t *testing.T) {
	td := daemontest.NewWith(t, daemontest.NewFakeHypervisor(), func(c *daemon.Config) { c.MetricsListen = "127.0.0.1:0" }, nil)
	if err := td.Stop(); err != nil {
		t.Fatalf("Run with a metrics listener: %v", err)
	}
	cfg := daemon.DefaultConfig()
	cfg.MetricsListen = "9477"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("Validate(metrics listen 9477) = %v, want a host:port error", err)
	}
}
