package network

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/netip"
)

// ErrSubnetFull is returned when a subnet has no free address left.
var ErrSubnetFull = errors.New("subnet has no free address")

// Gateway is the host's address in subnet: the first usable one, the
// convention every cloud uses, so guests can find it without DHCP.
func Gateway(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// ValidateSubnet checks that p is an IPv4 subnet big enough to hold the
// gateway and at least one guest.
func ValidateSubnet(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("subnet %s: only IPv4 CIDRs are supported", p)
	}
	if p.Bits() > 29 {
		return fmt.Errorf("subnet %s: /%d is too small; use /29 or larger", p, p.Bits())
	}
	if p.Masked() != p {
		return fmt.Errorf("subnet %s: host bits set; did you mean %s?", p, p.Masked())
	}
	return nil
}

// firstGuestOffset leaves a few addresses after the gateway for host-side
// services an admin may add later.
const firstGuestOffset = 10

// NextFree picks the lowest free guest address of subnet. It skips the
// network address, the gateway, the first few reserved addresses and the
// broadcast address.
func NextFree(subnet netip.Prefix, used []netip.Addr) (netip.Addr, error) {
	if err := ValidateSubnet(subnet); err != nil {
		return netip.Addr{}, err
	}
	taken := make(map[netip.Addr]bool, len(used))
	for _, a := range used {
		taken[a] = true
	}
	size := 1 << (32 - subnet.Bits())
	start := firstGuestOffset
	if size <= 2*firstGuestOffset {
		start = 2 // small subnets: everything after the gateway
	}
	a := subnet.Addr()
	for i := 0; i < start; i++ {
		a = a.Next()
	}
	for i := start; i < size-1; i++ {
		if !taken[a] {
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("%w: all %d guest addresses of %s are in use", ErrSubnetFull, size-1-start, subnet)
}

// GuestAddrs yields the guest addresses of subnet (those NextFree would
// consider), starting after from and wrapping around once, so an
// allocator that remembers its last address finds the next free one
// without scanning what is taken. An invalid from starts at the first.
func GuestAddrs(subnet netip.Prefix, from netip.Addr) iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		size := 1 << (32 - subnet.Bits())
		start := firstGuestOffset
		if size <= 2*firstGuestOffset {
			start = 2
		}
		first := subnet.Addr()
		for i := 0; i < start; i++ {
			first = first.Next()
		}
		n := size - 1 - start
		if n <= 0 {
			return
		}
		a := first
		if from.IsValid() && subnet.Contains(from) {
			a = from.Next()
		}
		for i := 0; i < n; i++ {
			if !subnet.Contains(a) || a.Compare(first) < 0 || isBroadcast(subnet, a) {
				a = first
			}
			if !yield(a) {
				return
			}
			a = a.Next()
		}
	}
}

func isBroadcast(subnet netip.Prefix, a netip.Addr) bool {
	b := a.As4()
	host := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	mask := uint32(1)<<(32-subnet.Bits()) - 1
	return host&mask == mask
}

// AddressMAC is the MAC of the guest NIC that holds ip: locally
// administered (52:54, QEMU's customary prefix) followed by the four bytes
// of the address. Addresses are unique on a host (VNets never overlap),
// so MACs are too, and the address is stable across stop and start, so
// the MAC is too.
func AddressMAC(ip netip.Addr) string {
	b := ip.As4()
	return net.HardwareAddr{0x52, 0x54, b[0], b[1], b[2], b[3]}.String()
}

// MAC derives a stable, locally administered MAC in QEMU's 52:54:00 range
// from the instance id, so the guest's network-config (matched by MAC)
// stays valid across stop and start.
//
// Instances get AddressMAC instead: 24 bits of a hash collide among a few
// thousand instances, and two guests on one bridge with one MAC would
// receive each other's frames.
func MAC(instanceID string) string {
	sum := sha256.Sum256([]byte(instanceID))
	return net.HardwareAddr{0x52, 0x54, 0x00, sum[0], sum[1], sum[2]}.String()
}
