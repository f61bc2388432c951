// Package libvirt is labvm's libvirt driver: it starts transient domains
// from the XML package vm builds, shuts them down and destroys them, lists
// the domains that carry labvm's metadata, talks to the QEMU guest agent
// (exec, background processes), opens serial consoles, reads per-domain
// statistics, and reconnects when libvirtd restarts.
//
// It is the only package that imports libvirt.org/go/libvirt (cgo); the
// engines see it through small interfaces of their own.
package libvirt
