package libvirt

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/labvm/labvm/vm"
	virt "libvirt.org/go/libvirt"
)

// statsGroups are the groups of virConnectGetAllDomainStats read for
// metrics and the idle policy: CPU time (all of QEMU's, and per vCPU),
// the balloon (memory), block counters and sizes
// (allocation, capacity, physical), interface counters.
const statsGroups = virt.DOMAIN_STATS_CPU_TOTAL | virt.DOMAIN_STATS_VCPU | virt.DOMAIN_STATS_BALLOON |
	virt.DOMAIN_STATS_BLOCK | virt.DOMAIN_STATS_INTERFACE

// DomainStats reads the counters of every running domain of labvm's in
// one call (virConnectGetAllDomainStats), sorted by name. Domains without
// labvm metadata belong to someone else and are skipped. NOWAIT makes a
// domain busy with a job (a migration, a long monitor command) report
// what it can without the monitor rather than hold the scrape up.
func (l *Driver) DomainStats(ctx context.Context) ([]vm.DomainStats, error) {
	var out []vm.DomainStats
	err := l.do(ctx, func(c *virt.Connect) error {
		out = out[:0]
		recs, err := c.GetAllDomainStats(nil, statsGroups,
			virt.CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE|virt.CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
		if err != nil {
			return err
		}
		defer func() {
			for i := range recs {
				recs[i].Domain.Free()
			}
		}()
		for i := range recs {
			od, ours, err := ownedDomain(recs[i].Domain)
			if err != nil {
				return err
			}
			if ours {
				out = append(out, domainStatsOf(od, recs[i]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("domain stats: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// domainStatsOf converts one libvirt record; libvirt reports memory in
// KiB and CPU time in nanoseconds.
func domainStatsOf(od vm.OwnedDomain, r virt.DomainStats) vm.DomainStats {
	s := vm.DomainStats{Name: od.Name, InstanceID: od.InstanceID}
	if r.Cpu != nil && r.Cpu.TimeSet {
		s.CPUTime = time.Duration(r.Cpu.Time)
	}
	for _, v := range r.Vcpu {
		if v.TimeSet {
			s.VCPUTime += time.Duration(v.Time)
		}
	}
	if b := r.Balloon; b != nil {
		if b.CurrentSet {
			s.MemoryBytes = b.Current * 1024
		}
		if b.MaximumSet {
			s.MaxMemoryBytes = b.Maximum * 1024
		}
		if b.RssSet {
			s.RSSBytes = b.Rss * 1024
		}
	}
	for _, b := range r.Block {
		if !b.NameSet {
			continue
		}
		d := vm.DiskStats{Device: b.Name, ReadBytes: b.RdBytes, WriteBytes: b.WrBytes,
			ReadRequests: b.RdReqs, WriteRequests: b.WrReqs}
		if b.AllocationSet {
			d.AllocationBytes = b.Allocation
		}
		if b.CapacitySet {
			d.CapacityBytes = b.Capacity
		}
		if b.PhysicalSet {
			d.PhysicalBytes = b.Physical
		}
		s.Disks = append(s.Disks, d)
	}
	for _, n := range r.Net {
		if !n.NameSet {
			continue
		}
		s.NICs = append(s.NICs, vm.NICStats{Device: n.Name, RxBytes: n.RxBytes, TxBytes: n.TxBytes,
			RxPackets: n.RxPkts, TxPackets: n.TxPkts})
	}
	return s
}
