package store

import (
	"fmt"
	"net/netip"
	"sort"
	"time"
)

// VNet is an isolated network: one Linux bridge, a CIDR, and the subnets
// carved from it (each with its gateway on the host).
type VNet struct {
	Name   string       `json:"name"`
	Bridge string       `json:"bridge"`
	CIDR   netip.Prefix `json:"cidr"`
	Egress string       `json:"egress"`
	// PeerTraffic is "allow" when the VNet's guests may reach each other;
	// anything else (and records made before it existed) is deny.
	PeerTraffic string    `json:"peer_traffic,omitempty"`
	Subnets     []Subnet  `json:"subnets"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
}

// Subnet is a CIDR inside a VNet.
type Subnet struct {
	Name string       `json:"name"`
	CIDR netip.Prefix `json:"cidr"`
}

// Subnet finds a subnet by name.
func (v VNet) Subnet(name string) (Subnet, bool) {
	for _, s := range v.Subnets {
		if s.Name == name {
			return s, true
		}
	}
	return Subnet{}, false
}

// VNet returns a VNet by name.
func (t *Tx) VNet(name string) (VNet, error) {
	return get[VNet](t, bucketVNets, []byte(name))
}

// PutVNet creates or replaces a VNet.
func (t *Tx) PutVNet(v VNet) error {
	return put(t, bucketVNets, []byte(v.Name), v)
}

// CreateVNet stores a new VNet; the name must be free.
func (t *Tx) CreateVNet(v VNet) error {
	if t.tx.Bucket(bucketVNets).Get([]byte(v.Name)) != nil {
		return fmt.Errorf("vnet %q: %w", v.Name, ErrExists)
	}
	return t.PutVNet(v)
}

// DeleteVNet removes a VNet record.
func (t *Tx) DeleteVNet(name string) error {
	return t.tx.Bucket(bucketVNets).Delete([]byte(name))
}

// VNets lists all VNets by name.
func (t *Tx) VNets() ([]VNet, error) {
	out, err := list[VNet](t, bucketVNets)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}
