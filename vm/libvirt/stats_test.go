package libvirt

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
	virt "libvirt.org/go/libvirt"
)

// TestDomainStatsTestDriver reads the stats of a labvm domain and a
// foreign one on the test driver, which implements only the state group:
// the call (with NOWAIT) is accepted, ours is reported with its instance
// id and zero counters, the foreign one and the driver's own "test"
// domain are not.
func TestDomainStatsTestDriver(t *testing.T) {
	l := newTestDriver(t)
	ours := testSpec("labvm-stats-0000ffff", "0000ffff11112222", vm.AccelTCG)
	startTestDomain(t, l, ours)
	const foreign = "labvm-stats-lookalike"
	if err := l.StartDomain(t.Context(), `<domain type='qemu'><name>`+foreign+`</name><memory unit='MiB'>128</memory><os><type arch='x86_64'>hvm</type></os></domain>`); err != nil {
		t.Fatalf("start foreign domain: %v", err)
	}
	t.Cleanup(func() { _ = l.Destroy(context.Background(), foreign) })

	stats, err := l.DomainStats(t.Context())
	if err != nil {
		t.Fatalf("DomainStats: %v", err)
	}
	found := false
	for _, s := range stats {
		switch s.Name {
		case ours.Name:
			found = true
			if want := (vm.DomainStats{Name: ours.Name, InstanceID: ours.InstanceID}); !reflect.DeepEqual(s, want) {
				t.Errorf("stats of %s = %+v, want %+v", s.Name, s, want)
			}
		case foreign, "test":
			t.Errorf("DomainStats reported %s, which has no labvm metadata", s.Name)
		}
	}
	if !found {
		t.Errorf("DomainStats = %+v, missing %s", stats, ours.Name)
	}
}

// checkRealDomainStats reads a domain booted in real QEMU
// (TestBootUnderTCG): the groups the test driver leaves empty are filled,
// under the names labvm gave the devices.
func checkRealDomainStats(t *testing.T, l *Driver, spec vm.DomainSpec) {
	t.Helper()
	stats, err := l.DomainStats(t.Context())
	if err != nil {
		t.Fatalf("DomainStats: %v", err)
	}
	var s *vm.DomainStats
	for i := range stats {
		if stats[i].Name == spec.Name {
			s = &stats[i]
		}
	}
	if s == nil {
		t.Fatalf("DomainStats = %+v, missing %s", stats, spec.Name)
	}
	t.Logf("stats of %s: %+v", s.Name, *s)
	if s.InstanceID != spec.InstanceID || s.CPUTime <= 0 || s.MaxMemoryBytes != uint64(spec.MemoryMiB)<<20 {
		t.Errorf("stats = %+v; want id %s, CPU time, %d MiB maximum", *s, spec.InstanceID, spec.MemoryMiB)
	}
	disks := map[string]vm.DiskStats{}
	for _, d := range s.Disks {
		disks[d.Device] = d
	}
	// The boot disk's sizes come from the block group too: QEMU reports
	// its capacity and the file's physical size whether or not the guest
	// wrote anything.
	if vda, ok := disks["vda"]; !ok {
		t.Errorf("disks = %+v, want vda", s.Disks)
	} else if vda.CapacityBytes == 0 || vda.PhysicalBytes == 0 {
		t.Errorf("vda = %+v, want its capacity and physical size", vda)
	}
	if len(s.NICs) != 1 || s.NICs[0].Device != spec.PortName {
		t.Errorf("NICs = %+v, want the tap %s", s.NICs, spec.PortName)
	}
}

func TestDomainStatsClosed(t *testing.T) {
	l, err := Connect(t.Context(), testDriverURI)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	if _, err := l.DomainStats(t.Context()); err == nil {
		t.Fatal("DomainStats on a closed driver succeeded")
	}
}

// TestDomainStatsOf converts a record as qemu:///system fills it (the
// test driver fills none of these groups): memory from KiB, CPU time from
// nanoseconds, unnamed devices skipped.
func TestDomainStatsOf(t *testing.T) {
	rec := virt.DomainStats{
		Cpu: &virt.DomainStatsCPU{TimeSet: true, Time: 2_500_000_000},
		// Two vCPUs summed; one libvirt could not read adds nothing.
		Vcpu:    []virt.DomainStatsVcpu{{TimeSet: true, Time: 1_000_000_000}, {TimeSet: true, Time: 500_000_000}, {Time: 7}},
		Balloon: &virt.DomainStatsBalloon{CurrentSet: true, Current: 1024, MaximumSet: true, Maximum: 2048, RssSet: true, Rss: 512},
		Block: []virt.DomainStatsBlock{
			{NameSet: true, Name: "vda", RdBytesSet: true, RdBytes: 10, WrBytesSet: true, WrBytes: 20, RdReqsSet: true, RdReqs: 1, WrReqsSet: true, WrReqs: 2,
				AllocationSet: true, Allocation: 5 << 20, CapacitySet: true, Capacity: 10 << 30, PhysicalSet: true, Physical: 6 << 20},
			// A size libvirt did not set stays zero (the collector leaves it out).
			{NameSet: true, Name: "vdb", Allocation: 7, CapacitySet: true, Capacity: 1 << 20},
			{Path: "/nowhere"},
		},
		Net: []virt.DomainStatsNet{{NameSet: true, Name: "lvp0123456789ab", RxBytesSet: true, RxBytes: 30, TxBytesSet: true, TxBytes: 40, RxPktsSet: true, RxPkts: 3, TxPktsSet: true, TxPkts: 4}},
	}
	got := domainStatsOf(vm.OwnedDomain{Name: "labvm-a-01234567", InstanceID: "0123456789abcdef"}, rec)
	want := vm.DomainStats{
		Name: "labvm-a-01234567", InstanceID: "0123456789abcdef",
		CPUTime: 2500 * time.Millisecond, VCPUTime: 1500 * time.Millisecond,
		MemoryBytes: 1 << 20, MaxMemoryBytes: 2 << 20, RSSBytes: 512 << 10,
		Disks: []vm.DiskStats{
			{Device: "vda", ReadBytes: 10, WriteBytes: 20, ReadRequests: 1, WriteRequests: 2,
				AllocationBytes: 5 << 20, CapacityBytes: 10 << 30, PhysicalBytes: 6 << 20},
			{Device: "vdb", CapacityBytes: 1 << 20},
		},
		NICs: []vm.NICStats{{Device: "lvp0123456789ab", RxBytes: 30, TxBytes: 40, RxPackets: 3, TxPackets: 4}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("domainStatsOf =\n%+v\nwant\n%+v", got, want)
	}
}
