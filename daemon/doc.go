// Package daemon is labvmd: the HTTP API on the Unix socket, caller
// identity, operations and their progress, the instance lifecycle that
// wires vm, storage, network and images together, and reconciliation of
// the store against libvirt and the data directory.
package daemon
