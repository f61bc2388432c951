package api

// Finding kinds reported by `labvm doctor`.
const (
	// FindingUnknownDomain is a running domain with labvm metadata and a
	// disk in this daemon's data dir that no record owns.
	FindingUnknownDomain = "unknown-domain"
	// FindingOrphanDir is a directory in instances/ that no record owns.
	FindingOrphanDir = "orphan-dir"
	// FindingOrphanFile is a file in instances/ or images/ nothing owns.
	FindingOrphanFile = "orphan-file"
	// FindingPartialFile is an interrupted write or download.
	FindingPartialFile = "partial-file"
	// FindingMissingDisk is a record whose disk is gone.
	FindingMissingDisk = "missing-disk"
	// FindingMissingDomain is a record said to run with no domain.
	FindingMissingDomain = "missing-domain"
	// FindingOrphanIP is an address allocation no record holds.
	FindingOrphanIP = "orphan-ip"
	// FindingUnallocatedIP is a record's address the allocation table lacks.
	FindingUnallocatedIP = "unallocated-ip"
	// FindingOrphanTable is an nftables table (inet and/or bridge) whose
	// recorded owner, a labvmd process, is gone.
	FindingOrphanTable = "orphan-firewall-table"
	// FindingUnknownTable is a labvm-named table no labvmd recorded as
	// its own.
	FindingUnknownTable = "unknown-firewall-table"
)

// DoctorRequest asks the daemon to fix what is safe (Repair) and/or to
// recover records from the manifests in the data dir (Rebuild). Rebuild
// runs first, so a repair never removes what a rebuild could bring back.
type DoctorRequest struct {
	Repair  bool `json:"repair,omitempty"`
	Rebuild bool `json:"rebuild,omitempty"`
}

// Finding is one disagreement between the store, libvirt and the data dir.
type Finding struct {
	Kind string `json:"kind"`
	// Target is what it is about: a path, a domain, an address.
	Target   string `json:"target"`
	Instance string `json:"instance,omitempty"`
	Detail   string `json:"detail"`
	// Fix says what --repair does about it, or what the admin can do.
	Fix string `json:"fix"`
	// Repairable is whether --repair fixes it by itself.
	Repairable bool `json:"repairable"`
}

// DoctorReport is what doctor found, then what it did.
type DoctorReport struct {
	Findings []Finding `json:"findings"`
	// Actions are the changes made, one line each.
	Actions []string `json:"actions"`
	// Remaining are the findings after the repair or rebuild, if any ran.
	Remaining []Finding `json:"remaining,omitempty"`
}
