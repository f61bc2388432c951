package metrics

import (
	"context"
	"slices"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/vm"
	"github.com/prometheus/client_golang/prometheus"
)

// scrapeTimeout bounds what one scrape asks of libvirt.
const scrapeTimeout = 10 * time.Second

// Instances are the instance records and the core quota (the lifecycle).
type Instances interface {
	Instances() ([]vm.Instance, error)
	Quota() (api.Quota, error)
}

// Jobs counts an instance's jobs (the job queue).
type Jobs interface {
	Counts(instanceID string) (running, queued int)
}

// Operations counts the operations in flight.
type Operations interface {
	Running() int
}

// Store is the state store.
type Store interface {
	Size() (int64, error)
}

// Hypervisor is libvirt as the metrics see it: whether it answers.
type Hypervisor interface {
	OwnedDomains(ctx context.Context) ([]vm.OwnedDomain, error)
}

// DomainStatser is the optional capability behind the per-instance
// metrics: each running domain's CPU, memory, disk and NIC counters.
type DomainStatser interface {
	DomainStats(ctx context.Context) ([]vm.DomainStats, error)
}

// State is what the collector reads at each scrape.
type State struct {
	Instances  Instances
	Jobs       Jobs
	Operations Operations
	Store      Store
	Hypervisor Hypervisor
}

// Label names of the per-instance metrics: the labvm instance's name and
// its own user (creator or assigned user), and the device in the guest.
var (
	instanceLabels = []string{"instance", "owner"}
	deviceLabels   = []string{"instance", "owner", "target_device"}
)

// The daemon's own state, labvm_*.
var (
	instancesDesc = prometheus.NewDesc("labvm_instances",
		"Instances by state and size family; every state of every known family is reported, 0 included.",
		[]string{"state", "family"}, nil)
	quotaUsedDesc = prometheus.NewDesc("labvm_quota_used_cores",
		"Cores taken by all instances, whatever their state.", nil, nil)
	quotaLimitDesc = prometheus.NewDesc("labvm_quota_limit_cores",
		"Cores allowed in total; absent when there is no limit.", nil, nil)
	familyUsedDesc = prometheus.NewDesc("labvm_quota_family_used_cores",
		"Cores taken by the instances of a size family.", []string{"family"}, nil)
	familyLimitDesc = prometheus.NewDesc("labvm_quota_family_limit_cores",
		"Cores allowed to a size family; absent for a family without a limit.", []string{"family"}, nil)
	jobsDesc = prometheus.NewDesc("labvm_jobs",
		"Jobs by state: queued, or running (started included) in their instances.", []string{"state"}, nil)
	opsInFlightDesc = prometheus.NewDesc("labvm_operations_in_flight",
		"Operations running now.", nil, nil)
	libvirtUpDesc = prometheus.NewDesc("labvm_libvirt_up",
		"1 when libvirt answered this scrape, 0 when it did not.", nil, nil)
	storeSizeDesc = prometheus.NewDesc("labvm_store_size_bytes",
		"Size of the state database (bbolt).", nil, nil)
)

// Each running instance's libvirt counters, named as the community
// libvirt exporters name them (kumina's libvirt_exporter and its widely
// used fork Tinkoff/libvirt-exporter; the block sizes are the fork's, whose
// allocation has no _bytes suffix). Counters start at zero with each boot.
var (
	cpuTimeDesc = prometheus.NewDesc("libvirt_domain_info_cpu_time_seconds_total",
		"CPU time used by the instance's QEMU, all vCPUs together.", instanceLabels, nil)
	memoryDesc = prometheus.NewDesc("libvirt_domain_info_memory_usage_bytes",
		"Memory of the guest as the balloon reports it.", instanceLabels, nil)
	maxMemoryDesc = prometheus.NewDesc("libvirt_domain_info_maximum_memory_bytes",
		"Memory the guest may have.", instanceLabels, nil)
	rssDesc = prometheus.NewDesc("libvirt_domain_memory_stats_rss_bytes",
		"Host memory held by the instance's QEMU (resident set).", instanceLabels, nil)
	readBytesDesc = prometheus.NewDesc("libvirt_domain_block_stats_read_bytes_total",
		"Bytes read from a block device.", deviceLabels, nil)
	writeBytesDesc = prometheus.NewDesc("libvirt_domain_block_stats_write_bytes_total",
		"Bytes written to a block device.", deviceLabels, nil)
	readReqsDesc = prometheus.NewDesc("libvirt_domain_block_stats_read_requests_total",
		"Read requests to a block device.", deviceLabels, nil)
	writeReqsDesc = prometheus.NewDesc("libvirt_domain_block_stats_write_requests_total",
		"Write requests to a block device.", deviceLabels, nil)
	allocationDesc = prometheus.NewDesc("libvirt_domain_block_stats_allocation",
		"Offset of the highest sector written on a block device: how far its image has grown, in bytes.", deviceLabels, nil)
	capacityDesc = prometheus.NewDesc("libvirt_domain_block_stats_capacity_bytes",
		"Size of a block device as the guest sees it.", deviceLabels, nil)
	physicalDesc = prometheus.NewDesc("libvirt_domain_block_stats_physicalsize_bytes",
		"Size on the host of the file behind a block device.", deviceLabels, nil)
	rxBytesDesc = prometheus.NewDesc("libvirt_domain_interface_stats_receive_bytes_total",
		"Bytes received by the guest on an interface (the tap's transmit).", deviceLabels, nil)
	txBytesDesc = prometheus.NewDesc("libvirt_domain_interface_stats_transmit_bytes_total",
		"Bytes sent by the guest on an interface.", deviceLabels, nil)
	rxPacketsDesc = prometheus.NewDesc("libvirt_domain_interface_stats_receive_packets_total",
		"Packets received by the guest on an interface.", deviceLabels, nil)
	txPacketsDesc = prometheus.NewDesc("libvirt_domain_interface_stats_transmit_packets_total",
		"Packets sent by the guest on an interface.", deviceLabels, nil)
)

// stateCollector reads State at every scrape: nothing is cached, so a
// scrape sees the store and libvirt as they are.
type stateCollector struct {
	s State
}

func newStateCollector(s State) *stateCollector { return &stateCollector{s: s} }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{instancesDesc, quotaUsedDesc, quotaLimitDesc, familyUsedDesc, familyLimitDesc,
		jobsDesc, opsInFlightDesc, libvirtUpDesc, storeSizeDesc,
		cpuTimeDesc, memoryDesc, maxMemoryDesc, rssDesc, readBytesDesc, writeBytesDesc, readReqsDesc, writeReqsDesc,
		allocationDesc, capacityDesc, physicalDesc, rxBytesDesc, txBytesDesc, rxPacketsDesc, txPacketsDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	// Collect has no context of its own; the bound keeps a hung libvirtd
	// from holding a scrape (and its slot) forever.
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	ch <- prometheus.MustNewConstMetric(opsInFlightDesc, prometheus.GaugeValue, float64(c.s.Operations.Running()))
	if n, err := c.s.Store.Size(); err != nil {
		ch <- prometheus.NewInvalidMetric(storeSizeDesc, err)
	} else {
		gauge(storeSizeDesc, float64(n))
	}

	list, err := c.s.Instances.Instances()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(instancesDesc, err)
	}
	quota, qerr := c.s.Instances.Quota()
	if qerr != nil {
		ch <- prometheus.NewInvalidMetric(quotaUsedDesc, qerr)
	} else {
		collectQuota(quota, gauge)
	}
	if err == nil {
		collectInstances(list, quota.Families, gauge)
		var running, queued int
		for _, inst := range list {
			r, q := c.s.Jobs.Counts(inst.ID)
			running += r
			queued += q
		}
		gauge(jobsDesc, float64(queued), "queued")
		gauge(jobsDesc, float64(running), "running")
	}

	up := 0.0
	if c.collectDomains(ctx, ch, list) {
		up = 1
	}
	gauge(libvirtUpDesc, up)
}

// collectInstances reports every state of every family known (from the
// catalogue, the limits and the instances themselves), so a count that
// drops to zero reads 0 rather than vanishing.
func collectInstances(list []vm.Instance, families []api.QuotaLine, gauge func(*prometheus.Desc, float64, ...string)) {
	type key struct {
		state  vm.State
		family string
	}
	counts := map[key]int{}
	var names []string
	for _, f := range families {
		names = append(names, f.Family)
	}
	for _, inst := range list {
		counts[key{inst.State, inst.Size.Family}]++
		if !slices.Contains(names, inst.Size.Family) {
			names = append(names, inst.Size.Family)
		}
	}
	for _, f := range names {
		for _, s := range vm.States() {
			gauge(instancesDesc, float64(counts[key{s, f}]), s.String(), f)
		}
	}
}

func collectQuota(q api.Quota, gauge func(*prometheus.Desc, float64, ...string)) {
	gauge(quotaUsedDesc, float64(q.Total.Used))
	if q.Total.Limit > 0 {
		gauge(quotaLimitDesc, float64(q.Total.Limit))
	}
	for _, f := range q.Families {
		gauge(familyUsedDesc, float64(f.Used), f.Family)
		if f.Limit > 0 {
			gauge(familyLimitDesc, float64(f.Limit), f.Family)
		}
	}
}

// collectDomains reports each instance's libvirt counters, when the
// hypervisor has them, and whether libvirt answered. Domains are matched
// to instances by the id in their metadata; others are not labvm's.
func (c *stateCollector) collectDomains(ctx context.Context, ch chan<- prometheus.Metric, list []vm.Instance) bool {
	statser, ok := c.s.Hypervisor.(DomainStatser)
	if !ok {
		_, err := c.s.Hypervisor.OwnedDomains(ctx)
		return err == nil
	}
	stats, err := statser.DomainStats(ctx)
	if err != nil {
		return false
	}
	byID := map[string]vm.Instance{}
	for _, inst := range list {
		byID[inst.ID] = inst
	}
	for _, s := range stats {
		inst, known := byID[s.InstanceID]
		if !known {
			continue
		}
		collectDomain(ch, s, inst.Name, inst.Owner())
	}
	return true
}

// collectDomain reports one domain. A value libvirt did not give (zero:
// the balloon of a guest busy with a job, under NOWAIT) is left out
// rather than reported as 0, which would read as a counter reset.
func collectDomain(ch chan<- prometheus.Metric, s vm.DomainStats, name, owner string) {
	send := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	if s.CPUTime > 0 {
		send(cpuTimeDesc, prometheus.CounterValue, s.CPUTime.Seconds(), name, owner)
	}
	for _, g := range []struct {
		d *prometheus.Desc
		v uint64
	}{{memoryDesc, s.MemoryBytes}, {maxMemoryDesc, s.MaxMemoryBytes}, {rssDesc, s.RSSBytes}} {
		if g.v > 0 {
			send(g.d, prometheus.GaugeValue, float64(g.v), name, owner)
		}
	}
	for _, d := range s.Disks {
		send(readBytesDesc, prometheus.CounterValue, float64(d.ReadBytes), name, owner, d.Device)
		send(writeBytesDesc, prometheus.CounterValue, float64(d.WriteBytes), name, owner, d.Device)
		send(readReqsDesc, prometheus.CounterValue, float64(d.ReadRequests), name, owner, d.Device)
		send(writeReqsDesc, prometheus.CounterValue, float64(d.WriteRequests), name, owner, d.Device)
		for _, g := range []struct {
			d *prometheus.Desc
			v uint64
		}{{allocationDesc, d.AllocationBytes}, {capacityDesc, d.CapacityBytes}, {physicalDesc, d.PhysicalBytes}} {
			if g.v > 0 {
				send(g.d, prometheus.GaugeValue, float64(g.v), name, owner, d.Device)
			}
		}
	}
	for _, n := range s.NICs {
		send(rxBytesDesc, prometheus.CounterValue, float64(n.RxBytes), name, owner, n.Device)
		send(txBytesDesc, prometheus.CounterValue, float64(n.TxBytes), name, owner, n.Device)
		send(rxPacketsDesc, prometheus.CounterValue, float64(n.RxPackets), name, owner, n.Device)
		send(txPacketsDesc, prometheus.CounterValue, float64(n.TxPackets), name, owner, n.Device)
	}
}
