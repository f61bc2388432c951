package network

import (
	"context"
	"fmt"

	"github.com/google/nftables"
)

// One port at a time. ApplyFirewall rewrites both tables, every port's
// chain included, so its cost grows with the number of guests; creating
// or deleting one instance needs none of that. AddPort and RemovePort
// change one port's chain and its elements in the bridge table's sets
// (PortChange), in one transaction each, and leave every other port and
// the inet table alone. They need a firewall applied with LockPorts under
// the same table, with the port's VNet in it (for its peers set): what
// ApplyFirewall installs at start-up and after every VNet change.

// AddPort locks port, a port of vnet (whose own Ports are not read), in
// the firewall installed under table, in one nftables transaction. Adding
// a port that is already there with the same MAC and address changes
// nothing; one there with other rules gets the new ones. The table after
// is the table ApplyFirewall would install with the port added to its
// VNet.
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
		return fmt.Errorf("add port %s to table bridge %s: %w", port.Name, c.Table, err)
	}
	return nil
}

// RemovePort takes the port named port (PortName) of vnet out of the
// firewall installed under table, in one nftables transaction: its chain
// and its elements, and nothing else. A port that is not there is not an
// error.
//
// It acts on the network namespace of the calling thread.
func RemovePort(ctx context.Context, table string, vnet FirewallVNet, port string) error {
	c, err := buildPortRemoval(table, vnet, port)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := commitPort(c, false); err != nil {
		return fmt.Errorf("remove port %s from table bridge %s: %w", port, c.Table, err)
	}
	return nil
}

// commitPort adds (add) or removes (!add) c in one batch.
func commitPort(c PortChange, add bool) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables netlink socket: %w", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyBridge, Name: c.Table}
	// Adding a chain that exists changes nothing, so either way the
	// chain is there for what follows.
	chain := conn.AddChain(&nftables.Chain{Name: c.Chain.Name, Table: table})
	// A port added again gets exactly its new rules.
	conn.FlushChain(chain)
	if add {
		if err := addRules(conn, chain, c.Chain.Rules, nil); err != nil {
			return err
		}
	}
	for _, e := range c.Elements {
		set := kernelSet(table, e.Set, e.Map)
		// An element that is already there with the same data is no
		// error: adding is idempotent, and adding before deleting makes
		// the delete valid whether or not the port was there, without a
		// listing that would cost as much as the set is large.
		if err := conn.SetAddElements(set, []nftables.SetElement{kernelElement(e.SetElement, true)}); err != nil {
			return fmt.Errorf("set %s: %w", e.Set, err)
		}
		if !add {
			if err := conn.SetDeleteElements(set, []nftables.SetElement{kernelElement(e.SetElement, false)}); err != nil {
				return fmt.Errorf("set %s: %w", e.Set, err)
			}
		}
	}
	if !add {
		// The elements jumping to it are gone, so nothing refers to it.
		conn.DelChain(chain)
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("commit nftables transaction: %w", err)
	}
	return nil
}
