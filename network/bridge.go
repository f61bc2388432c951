package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bridge describes a VNet's Linux bridge and the host's addresses on it:
// one gateway per subnet, e.g. 10.177.0.1/24.
type Bridge struct {
	Name      string
	Addresses []netip.Prefix
}

// ValidateBridgeName checks a Linux interface name.
func ValidateBridgeName(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("bridge name %q: must be 1-15 characters", name)
	}
	for _, c := range name {
		if c == '/' || c == ' ' || c == ':' || c == 0 {
			return fmt.Errorf("bridge name %q: contains %q", name, c)
		}
	}
	return nil
}

// EnsureBridge makes the bridge exist, carry exactly the given IPv4
// addresses and be up. It is idempotent: calling it on a bridge that is
// already right changes nothing, so the daemon can call it at every start
// and after every subnet change (a removed subnet's gateway goes away).
func EnsureBridge(ctx context.Context, b Bridge) error {
	if err := ValidateBridgeName(b.Name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	link, err := netlink.LinkByName(b.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = b.Name
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
		if link, err = netlink.LinkByName(b.Name); err != nil {
			return fmt.Errorf("find bridge %s after creating it: %w", b.Name, err)
		}
	case err != nil:
		return fmt.Errorf("look up bridge %s: %w", b.Name, err)
	case link.Type() != "bridge":
		return fmt.Errorf("interface %s exists but is a %s, not a bridge; pick another bridge name", b.Name, link.Type())
	}

	want := map[netip.Prefix]bool{}
	for _, p := range b.Addresses {
		want[p] = true
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: prefixToIPNet(p)}); err != nil {
			return fmt.Errorf("set gateway %s on %s: %w", p, b.Name, err)
		}
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", b.Name, err)
	}
	for _, a := range have {
		p, ok := ipNetToPrefix(a.IPNet)
		if !ok {
			continue
		}
		// ipNetToPrefix masks; compare with the host address kept.
		addr, _ := netip.AddrFromSlice(a.IPNet.IP)
		if !want[netip.PrefixFrom(addr.Unmap(), p.Bits())] {
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, b.Name, err)
			}
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", b.Name, err)
	}
	return nil
}

// DeleteBridge removes the bridge; a missing bridge is not an error.
func DeleteBridge(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("refusing to delete %s: it is a %s, not a bridge", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// BridgeExists reports whether a bridge of that name exists.
func BridgeExists(name string) (bool, error) {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return link.Type() == "bridge", nil
}

// RoutesOverlapping returns the host's routes that overlap p, ignoring
// routes on the named interfaces (labvm's own bridges, whose subnets the
// caller checks itself). A subnet that overlaps a host route would make
// guests unreachable or hijack host traffic.
func RoutesOverlapping(p netip.Prefix, exclude ...string) ([]string, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	skip := map[int]bool{}
	for _, name := range exclude {
		if l, err := netlink.LinkByName(name); err == nil {
			skip[l.Attrs().Index] = true
		}
	}
	var out []string
	for _, r := range routes {
		if r.Dst == nil || skip[r.LinkIndex] {
			continue
		}
		rp, ok := ipNetToPrefix(r.Dst)
		// The default route overlaps everything by design.
		if ok && rp.Bits() > 0 && rp.Overlaps(p) {
			out = append(out, rp.String())
		}
	}
	return out, nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}
