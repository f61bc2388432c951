package network

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// One port at a time. ApplyFirewall rewrites both tables, every port's
// elements included, so its cost grows with the number of guests; creating
// or deleting one instance needs none of that. AddPort and RemovePort
// change one port's elements in the bridge table's sets (PortChange), in
// one transaction each, and leave every other port, every rule and the
// inet table alone. They need a firewall applied with LockPorts under the
// same table, with the port's VNet in it (for its peers set): what
// ApplyFirewall installs at start-up and after every VNet change.

// AddPort locks port, a port of vnet (whose own Ports are not read), in
// the firewall installed under table, in one nftables transaction. Adding
// a port that is already there with the same MAC and address changes
// nothing. The table after is the table ApplyFirewall would install with
// the port added to its VNet.
//
// A port is its name, MAC and address together: to give a port another
// MAC or address, remove it with the old ones first.
//
// It acts on the network namespace of the calling thread.
func AddPort(ctx context.Context, table string, vnet FirewallVNet, port FirewallPort) error {
	c, err := BuildPortChange(table, vnet, port)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := commitPort(c, true); err != nil {
		if errors.Is(err, unix.ENOENT) {
			// The kernel's answer names none of what it missed.
			return fmt.Errorf("add port %s: table bridge %s or its sets (VNet %s's peers among them) are missing; apply the firewall with LockPorts first: %w",
				port.Name, c.Table, vnet.Name, unix.ENOENT)
		}
		return fmt.Errorf("add port %s to table bridge %s: %w", port.Name, c.Table, err)
	}
	return nil
}

// RemovePort takes port of vnet out of the firewall installed under
// table, in one nftables transaction: its elements, and nothing else. A
// port that is not there is not an error.
//
// It acts on the network namespace of the calling thread.
func RemovePort(ctx context.Context, table string, vnet FirewallVNet, port FirewallPort) error {
	c, err := BuildPortChange(table, vnet, port)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := commitPort(c, false); err != nil {
		return fmt.Errorf("remove port %s from table bridge %s: %w", port.Name, c.Table, err)
	}
	return nil
}

// commitPort adds (add) or removes (!add) c's elements in one batch.
func commitPort(c PortChange, add bool) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables netlink socket: %w", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyBridge, Name: c.Table}
	for _, e := range c.Elements {
		set := kernelSet(table, e.Set, e.Key)
		elem := []nftables.SetElement{{Key: kernelKey(e.Key, e.SetElement)}}
		// Adding an element that is there changes nothing, so adding is
		// idempotent, and adding before deleting makes the delete valid
		// whether or not the port was there, without a listing that would
		// cost as much as the set is large.
		if err := conn.SetAddElements(set, elem); err != nil {
			return fmt.Errorf("set %s: %w", e.Set, err)
		}
		if !add {
			if err := conn.SetDeleteElements(set, elem); err != nil {
				return fmt.Errorf("set %s: %w", e.Set, err)
			}
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("commit nftables transaction: %w", err)
	}
	return nil
}
