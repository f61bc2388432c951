package store

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/labvm/labvm/vm"
)

// Instance returns the instance with the given id.
func (t *Tx) Instance(id string) (vm.Instance, error) {
	return get[vm.Instance](t, bucketInstances, []byte(id))
}

// InstanceByName returns the instance with the given name.
func (t *Tx) InstanceByName(name string) (vm.Instance, error) {
	id := t.tx.Bucket(bucketNames).Get([]byte(name))
	if id == nil {
		return vm.Instance{}, ErrNotFound
	}
	return t.Instance(string(id))
}

// CreateInstance stores a new instance; its name must be free.
func (t *Tx) CreateInstance(inst vm.Instance) error {
	names := t.tx.Bucket(bucketNames)
	if names.Get([]byte(inst.Name)) != nil {
		return fmt.Errorf("instance %q: %w", inst.Name, ErrExists)
	}
	if err := names.Put([]byte(inst.Name), []byte(inst.ID)); err != nil {
		return err
	}
	if err := put(t, bucketInstances, []byte(inst.ID), inst); err != nil {
		return err
	}
	t.cachePut(inst)
	return nil
}

// PutInstance updates an existing instance. It keeps the stored
// inst.Policy whatever inst says: operations write the copy they read
// when they began, and must not undo a policy set meanwhile (SetPolicy).
func (t *Tx) PutInstance(inst vm.Instance) error {
	cur, err := t.Instance(inst.ID)
	if err != nil {
		return fmt.Errorf("instance %s: %w", inst.ID, err)
	}
	inst.Policy = cur.Policy
	if err := put(t, bucketInstances, []byte(inst.ID), inst); err != nil {
		return err
	}
	t.cachePut(inst)
	return nil
}

// SetPolicy changes an instance's policy (the idle shutdown) and returns
// the record as stored.
func (t *Tx) SetPolicy(id string, p vm.Policy) (vm.Instance, error) {
	inst, err := t.Instance(id)
	if err != nil {
		return inst, fmt.Errorf("instance %s: %w", id, err)
	}
	inst.Policy = p
	if err := put(t, bucketInstances, []byte(inst.ID), inst); err != nil {
		return inst, err
	}
	t.cachePut(inst)
	return inst, nil
}

// DeleteInstance removes an instance record and its name.
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
	out, err := list[vm.Instance](t, bucketInstances)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
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
