// Package storage owns an instance's block devices on the host: the qcow2
// overlay it boots from, the NoCloud seed ISO that configures it on first
// boot, and the thin typed wrapper around qemu-img that everything else uses
// to inspect and convert disk images. It knows nothing about libvirt or the
// image catalogue; callers hand it paths.
package storage
