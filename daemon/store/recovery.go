package store

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt means the database file is unreadable. labvmd refuses to
// start on it rather than moving it aside itself: the admin decides what
// happens to the only copy of roles, quotas and the audit log, and the
// error says how to recover the instances (`labvm doctor --rebuild`).
var ErrCorrupt = errors.New("state database is corrupt")

// corrupt wraps a failure to read the database file as ErrCorrupt with
// the recovery steps; errors that say nothing about the file's content
// (permissions, a missing directory) pass through unchanged.
func corrupt(path string, err error) error {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("open state %s: %w", path, err)
	}
	return fmt.Errorf("%w: %s: %v; move it aside (mv %s %s.corrupt), start labvmd again (it creates an empty database), then run `labvm doctor --rebuild` to recover instances and images from their manifests",
		ErrCorrupt, path, err, path, path)
}

// recoverCorrupt turns a panic of bbolt on a damaged page into ErrCorrupt.
// It is deferred by Open only: a panic there means the file, not the code.
func recoverCorrupt(path string, err *error) {
	if p := recover(); p != nil {
		*err = corrupt(path, fmt.Errorf("panic reading it: %v", p))
	}
}

// verify walks every page once, so a damaged file is found at start with
// a clear message instead of as a panic in the middle of an operation.
func verify(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
}

// ReleaseIPOf frees ip in vnet only if instanceID holds it, so releasing
// a stale address of a failed or deleted instance can never take the
// address away from the instance that holds it now.
func (t *Tx) ReleaseIPOf(vnet string, ip netip.Addr, instanceID string) error {
	if !ip.IsValid() {
		return nil
	}
	b := t.tx.Bucket(bucketIPs)
	k := ipKey(vnet, ip)
	if owner := b.Get(k); owner == nil || string(owner) != instanceID {
		return nil
	}
	return b.Delete(k)
}

// AllIPAllocations lists the addresses held in every VNet.
func (t *Tx) AllIPAllocations() ([]IPAllocation, error) {
	var out []IPAllocation
	err := t.tx.Bucket(bucketIPs).ForEach(func(k, v []byte) error {
		vnet, ip, err := splitIPKey(k)
		if err != nil {
			return err
		}
		out = append(out, IPAllocation{VNet: vnet, IP: ip, InstanceID: string(v)})
		return nil
	})
	return out, err
}

func splitIPKey(k []byte) (string, netip.Addr, error) {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '/' {
			ip, err := netip.ParseAddr(string(k[i+1:]))
			if err != nil {
				return "", netip.Addr{}, fmt.Errorf("decode ip allocation %q: %w", k, err)
			}
			return string(k[:i]), ip, nil
		}
	}
	return "", netip.Addr{}, fmt.Errorf("decode ip allocation %q: no '/'", k)
}
