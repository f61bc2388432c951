// Package cluster makes this labvmd a member of a lab cluster whose shared
// state lives in etcd. It owns the etcd client (mutual TLS), this host's
// liveness lease, the publishing of its capacity and instances under
// /labvm/<cluster>/, and the cluster-wide reads (`labvm hosts`, `labvm
// list --cluster`). The host's bbolt store stays the truth for its own
// instances: etcd holds copies for the others to read, written only by
// the host they describe.
//
// Only the daemon's wiring imports it (a layout rule): it hands the
// member a Source to read and a context to run under; engines never see
// etcd. See docs/ARCHITECTURE.md, "Clusters".
package cluster
