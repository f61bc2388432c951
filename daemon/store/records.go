package store

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/labvm/labvm/vm"
)

// An instance is kept in two buckets, one per owner of its fields: the
// record (bucket instances), written by whoever holds the instance's
// claim (create, operations, reconcile), and its policy (bucket policies,
// absent when zero), which is the user's and changes at any time, even
// while an operation runs, through SetPolicy only. The record as stored
// never holds the policy (encodeInstance); every read joins it back, so
// above the store an instance is one vm.Instance.

// encodeInstance is inst as bucket instances holds it: without its
// policy (vm.Instance's "policy" is omitzero, so the key is absent).
func encodeInstance(inst vm.Instance) ([]byte, error) {
	inst.Policy = vm.Policy{}
	raw, err := json.Marshal(inst)
	if err != nil {
		return nil, fmt.Errorf("encode %s/%s: %w", bucketInstances, inst.ID, err)
	}
	return raw, nil
}

// decodeInstance reads a stored record and joins its policy.
func (t *Tx) decodeInstance(id, raw []byte) (vm.Instance, error) {
	var inst vm.Instance
	if err := json.Unmarshal(raw, &inst); err != nil {
		return inst, fmt.Errorf("decode %s/%s: %w", bucketInstances, id, err)
	}
	p, err := t.policy(id)
	inst.Policy = p
	return inst, err
}

// policy is the stored policy of instance id; zero when none is stored.
func (t *Tx) policy(id []byte) (vm.Policy, error) {
	var p vm.Policy
	raw := t.tx.Bucket(bucketPolicies).Get(id)
	if raw == nil {
		return p, nil
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, fmt.Errorf("decode %s/%s: %w", bucketPolicies, id, err)
	}
	return p, nil
}

// putPolicy stores p as instance id's policy; a zero policy is stored
// as no entry.
func (t *Tx) putPolicy(id string, p vm.Policy) error {
	if p == (vm.Policy{}) {
		return t.tx.Bucket(bucketPolicies).Delete([]byte(id))
	}
	return put(t, bucketPolicies, []byte(id), p)
}

func (t *Tx) instanceExists(id string) bool {
	return t.tx.Bucket(bucketInstances).Get([]byte(id)) != nil
}

// Instance returns the instance with the given id, its policy joined.
func (t *Tx) Instance(id string) (vm.Instance, error) {
	raw := t.tx.Bucket(bucketInstances).Get([]byte(id))
	if raw == nil {
		return vm.Instance{}, ErrNotFound
	}
	return t.decodeInstance([]byte(id), raw)
}

// InstanceByName returns the instance with the given name.
func (t *Tx) InstanceByName(name string) (vm.Instance, error) {
	id := t.tx.Bucket(bucketNames).Get([]byte(name))
	if id == nil {
		return vm.Instance{}, ErrNotFound
	}
	return t.Instance(string(id))
}

// Policy returns the stored policy of instance id: what an operation
// holding an older copy of the record reads to learn the policy now.
func (t *Tx) Policy(id string) (vm.Policy, error) {
	if !t.instanceExists(id) {
		return vm.Policy{}, fmt.Errorf("instance %s: %w", id, ErrNotFound)
	}
	return t.policy([]byte(id))
}

// CreateInstance stores a new instance, its record and its policy; its
// name must be free.
func (t *Tx) CreateInstance(inst vm.Instance) error {
	names := t.tx.Bucket(bucketNames)
	if names.Get([]byte(inst.Name)) != nil {
		return fmt.Errorf("instance %q: %w", inst.Name, ErrExists)
	}
	if err := names.Put([]byte(inst.Name), []byte(inst.ID)); err != nil {
		return err
	}
	raw, err := encodeInstance(inst)
	if err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketInstances).Put([]byte(inst.ID), raw); err != nil {
		return err
	}
	if err := t.putPolicy(inst.ID, inst.Policy); err != nil {
		return err
	}
	t.cachePut(inst)
	return nil
}

// PutInstance writes an existing instance's record as inst has it. The
// policy is not part of the record: inst.Policy is not written (SetPolicy
// does that), so an operation writing the copy it read when it began
// cannot undo a policy set meanwhile.
func (t *Tx) PutInstance(inst vm.Instance) error {
	if !t.instanceExists(inst.ID) {
		return fmt.Errorf("instance %s: %w", inst.ID, ErrNotFound)
	}
	raw, err := encodeInstance(inst)
	if err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketInstances).Put([]byte(inst.ID), raw); err != nil {
		return err
	}
	// Readers see the record with the policy as stored.
	if inst.Policy, err = t.policy([]byte(inst.ID)); err != nil {
		return err
	}
	t.cachePut(inst)
	return nil
}

// SetPolicy changes an instance's policy (the idle shutdown), and nothing
// else, and returns the instance as now stored.
func (t *Tx) SetPolicy(id string, p vm.Policy) (vm.Instance, error) {
	inst, err := t.Instance(id)
	if err != nil {
		return inst, fmt.Errorf("instance %s: %w", id, err)
	}
	if err := t.putPolicy(id, p); err != nil {
		return inst, err
	}
	inst.Policy = p
	t.cachePut(inst)
	return inst, nil
}

// DeleteInstance removes an instance: its record, its name and its
// policy.
func (t *Tx) DeleteInstance(id string) error {
	inst, err := t.Instance(id)
	if err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketNames).Delete([]byte(inst.Name)); err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketInstances).Delete([]byte(id)); err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketPolicies).Delete([]byte(id)); err != nil {
		return err
	}
	t.cacheDelete(id)
	return nil
}

// Instances lists all instances ordered by name. A read-only
// transaction gets them from the decoded cache (as of the latest commit);
// a write transaction decodes them, so it sees its own writes.
func (t *Tx) Instances() ([]vm.Instance, error) {
	if !t.tx.Writable() && t.cache != nil {
		return t.cache.list(), nil
	}
	out, err := t.decodeInstances()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// decodeInstances decodes every instance, policies joined, in id order.
func (t *Tx) decodeInstances() ([]vm.Instance, error) {
	var out []vm.Instance
	err := t.tx.Bucket(bucketInstances).ForEach(func(k, raw []byte) error {
		inst, err := t.decodeInstance(k, raw)
		if err != nil {
			return err
		}
		out = append(out, inst)
		return nil
	})
	return out, err
}

// Image is a catalogue entry: a name bound to a stored base file.
type Image struct {
	Name         string    `json:"name"`
	Digest       string    `json:"digest"`
	Path         string    `json:"path"`
	SourceFormat string    `json:"source_format"`
	VirtualSize  int64     `json:"virtual_size"`
	FileSize     int64     `json:"file_size"`
	ImportedBy   string    `json:"imported_by"`
	ImportedAt   time.Time `json:"imported_at"`
	// Apps are the applications guests of this image serve; nil means the
	// defaults.
	Apps []App `json:"apps,omitempty"`
}

// App is an application in an image: a guest port and the URL path to
// open.
type App struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	Path string `json:"path"`
}

// Image returns the image with the given name.
func (t *Tx) Image(name string) (Image, error) {
	return get[Image](t, bucketImages, []byte(name))
}

// CreateImage stores a new image; its name must be free.
func (t *Tx) CreateImage(img Image) error {
	if t.tx.Bucket(bucketImages).Get([]byte(img.Name)) != nil {
		return fmt.Errorf("image %q: %w", img.Name, ErrExists)
	}
	return put(t, bucketImages, []byte(img.Name), img)
}

// DeleteImage removes an image record.
func (t *Tx) DeleteImage(name string) error {
	return t.tx.Bucket(bucketImages).Delete([]byte(name))
}

// Images lists all images ordered by name.
func (t *Tx) Images() ([]Image, error) {
	return list[Image](t, bucketImages)
}

func ipKey(vnet string, ip netip.Addr) []byte { return []byte(vnet + "/" + ip.String()) }

// AllocateIP records that ip in vnet belongs to instanceID.
func (t *Tx) AllocateIP(vnet string, ip netip.Addr, instanceID string) error {
	b := t.tx.Bucket(bucketIPs)
	k := ipKey(vnet, ip)
	if owner := b.Get(k); owner != nil && string(owner) != instanceID {
		return fmt.Errorf("address %s in %s held by instance %s: %w", ip, vnet, owner, ErrExists)
	}
	return b.Put(k, []byte(instanceID))
}

// IPAllocated reports whether ip in vnet is held.
func (t *Tx) IPAllocated(vnet string, ip netip.Addr) bool {
	return t.tx.Bucket(bucketIPs).Get(ipKey(vnet, ip)) != nil
}

// IPHint is the address the last allocation in vnet took (invalid when
// none is recorded): the next search starts after it.
func (t *Tx) IPHint(vnet string) netip.Addr {
	a, _ := netip.ParseAddr(string(t.tx.Bucket(bucketIPHints).Get([]byte(vnet))))
	return a
}

// SetIPHint records where vnet's next address search starts.
func (t *Tx) SetIPHint(vnet string, ip netip.Addr) error {
	return t.tx.Bucket(bucketIPHints).Put([]byte(vnet), []byte(ip.String()))
}

// ReleaseIP frees ip in vnet. Releasing a free address is not an error, so
// rollback and reconcile can call it blindly.
func (t *Tx) ReleaseIP(vnet string, ip netip.Addr) error {
	return t.tx.Bucket(bucketIPs).Delete(ipKey(vnet, ip))
}

// IPAllocation is one address held by one instance.
type IPAllocation struct {
	VNet       string
	IP         netip.Addr
	InstanceID string
}

// IPAllocations lists the addresses held in vnet.
func (t *Tx) IPAllocations(vnet string) ([]IPAllocation, error) {
	var out []IPAllocation
	prefix := []byte(vnet + "/")
	c := t.tx.Bucket(bucketIPs).Cursor()
	for k, v := c.Seek(prefix); k != nil && len(k) > len(prefix) && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
		ip, err := netip.ParseAddr(string(k[len(prefix):]))
		if err != nil {
			return nil, fmt.Errorf("decode ip allocation %q: %w", k, err)
		}
		out = append(out, IPAllocation{VNet: vnet, IP: ip, InstanceID: string(v)})
	}
	return out, nil
}
