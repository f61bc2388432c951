package network

import (
	"fmt"
	"net/netip"
)

// reservedRanges are IPv4 ranges a VNet must never use: the host or the
// network stack gives them a meaning of their own, so guests there would
// be unreachable or would capture the host's own traffic.
var reservedRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" (0/8), which the stack never routes`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback (127/8), which never leaves the host"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254/16), used by cloud metadata services and zeroconf"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (224/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (240/4) and broadcast"},
}

// ValidateCIDR checks a VNet or subnet CIDR a user or config asks for:
// everything ValidateSubnet checks, and that it avoids the reserved
// ranges above. Each error says what is wrong and what to use instead.
func ValidateCIDR(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("CIDR %s is not valid; use an IPv4 CIDR like 10.80.0.0/24", p)
	}
	if !p.Addr().Is4() || p.Addr().Is4In6() {
		return fmt.Errorf("CIDR %s is not IPv4: guests are IPv4-only; use an IPv4 CIDR like 10.80.0.0/24", p)
	}
	for _, r := range reservedRanges {
		if r.prefix.Overlaps(p) {
			return fmt.Errorf("CIDR %s overlaps %s; use a private range such as 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16", p, r.what)
		}
	}
	return ValidateSubnet(p)
}
