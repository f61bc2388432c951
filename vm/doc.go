// Package vm owns the compute instance: its record, its typed state machine,
// the size catalogue, and everything that talks to libvirt and the QEMU guest
// agent. libvirt is imported here and nowhere else, so the rest of labvm
// sees hypervisors only through the small interfaces its consumers define.
package vm
