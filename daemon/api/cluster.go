package api

import "time"

// HostState is whether a cluster host holds its lease in etcd.
type HostState string

// Host states: up while the host's labvmd renews its lease; lost once the
// lease expired (host down, cut off, or its labvmd stopped). A lost
// host's instances are still listed, never deleted.
const (
	HostUp   HostState = "up"
	HostLost HostState = "lost"
)

// HostCapacity is what a cluster host has and what its instances hold,
// as it publishes it (memory and disk in bytes).
type HostCapacity struct {
	// Cores is the host's CPU count; CoresUsed the cores its instances
	// hold (every instance counts, whatever its state).
	Cores           int   `json:"cores"`
	CoresUsed       int   `json:"cores_used"`
	MemoryTotal     int64 `json:"memory_total"`
	MemoryAvailable int64 `json:"memory_available"`
	DiskFree        int64 `json:"disk_free"`
}

// ClusterHost is one host of the cluster as its labvmd last published it.
// HostCapacity's fields sit at the top level of its JSON.
type ClusterHost struct {
	Name  string    `json:"name"`
	State HostState `json:"state"`
	HostCapacity
	Instances int      `json:"instances"`
	Images    []string `json:"images"`
	// SSH and Socket reach the host's labvmd (labvm --host SSH --socket Socket).
	SSH         string    `json:"ssh"`
	Socket      string    `json:"socket"`
	Version     string    `json:"version"`
	PublishedAt time.Time `json:"published_at"`
}

// ClusterInstance is an instance as its host published it to the cluster.
type ClusterInstance struct {
	Name      string        `json:"name"`
	Host      string        `json:"host"`
	HostState HostState     `json:"host_state"`
	State     InstanceState `json:"state"`
	Owner     string        `json:"owner"`
	Size      string        `json:"size"`
	Family    string        `json:"family"`
	VCPUs     int           `json:"vcpus"`
}

// Placement is the host a create goes to when no host is pinned.
type Placement struct {
	Host string `json:"host"`
	// SSH and Socket reach the host's labvmd (labvm --host SSH --socket Socket).
	SSH    string `json:"ssh"`
	Socket string `json:"socket"`
	// Local is set when it is the host that answered.
	Local bool   `json:"local"`
	Why   string `json:"why"`
}

// ClusterMembership is this daemon's place in its cluster.
type ClusterMembership struct {
	Name string `json:"name"`
	Host string `json:"host"`
	// Connected is set while the host holds its lease in etcd; Error says
	// why not, when it does not.
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
}
