// Package network owns the guests' networks: VNet bridges made with
// netlink, the host's gateway address on them, and address planning (IPAM)
// inside a subnet. It keeps no state of its own: allocations are persisted
// by the caller, so this package stays a set of pure planners plus the
// kernel calls that realise them. The one exception is host-wide: the
// record of which labvmd process owns each firewall table
// (FirewallRegistry, under /run), which tells an orphaned table from a
// running daemon's.
package network
