package vm

import "time"

// DomainStats is what the hypervisor counts for one running domain of
// labvm's. Counters (CPU time, bytes, requests, packets) run from the
// domain's start, so they restart at zero with each boot of a transient
// domain; a value the driver could not read is zero.
type DomainStats struct {
	Name       string
	InstanceID string
	// CPUTime is the CPU time the domain's QEMU used, all threads
	// together: the vCPUs and QEMU's own emulator and I/O threads.
	CPUTime time.Duration
	// VCPUTime is the time the vCPU threads ran, all vCPUs together: the
	// guest's own use, without QEMU's overhead around it (which is most
	// of an idle guest's CPUTime under TCG). 0 when libvirt did not
	// report it.
	VCPUTime time.Duration
	// MemoryBytes is the guest's memory as the balloon reports it now,
	// MaxMemoryBytes its ceiling, RSSBytes what QEMU holds on the host.
	MemoryBytes    uint64
	MaxMemoryBytes uint64
	RSSBytes       uint64
	Disks          []DiskStats
	NICs           []NICStats
}

// DiskStats are one block device's counters and sizes; Device is its
// target name in the guest (vda, sda).
type DiskStats struct {
	Device        string
	ReadBytes     uint64
	WriteBytes    uint64
	ReadRequests  uint64
	WriteRequests uint64
	// AllocationBytes is the offset of the highest sector written in the
	// image (for a qcow2 overlay: how far it has grown), CapacityBytes the
	// disk's size as the guest sees it, PhysicalBytes the size of the file
	// on the host. Gauges, not counters.
	AllocationBytes uint64
	CapacityBytes   uint64
	PhysicalBytes   uint64
}

// NICStats are one network interface's counters, as the host sees its
// tap: Device is the tap's name (lvp…).
type NICStats struct {
	Device    string
	RxBytes   uint64
	TxBytes   uint64
	RxPackets uint64
	TxPackets uint64
}
