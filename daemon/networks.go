package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
)

// kernelNetwork is the real HostNetwork: netlink and nftables.
type kernelNetwork struct{}

func (kernelNetwork) EnsureBridge(ctx context.Context, b network.Bridge) error {
	return network.EnsureBridge(ctx, b)
}

func (kernelNetwork) DeleteBridge(ctx context.Context, name string) error {
	return network.DeleteBridge(ctx, name)
}

func (kernelNetwork) ApplyFirewall(ctx context.Context, spec network.FirewallSpec) error {
	if len(spec.VNets) == 0 {
		return network.RemoveFirewall(ctx, spec.TableName)
	}
	return network.ApplyFirewall(ctx, spec)
}

// EnableForwarding turns on IPv4 forwarding, which NAT egress needs; it is
// what libvirt does for its NAT networks too.
func (kernelNetwork) EnableForwarding() error {
	return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
}

func (kernelNetwork) RoutesOverlapping(p netip.Prefix, exclude ...string) ([]string, error) {
	return network.RoutesOverlapping(p, exclude...)
}

// bridgeName derives a VNet's bridge: a prefix plus a hash of the data dir
// and the name, so two daemons (or a test daemon next to a real one)
// never share a bridge, and names fit the kernel's 15 characters.
func (d *Daemon) bridgeName(vnet string) string {
	sum := sha256.Sum256([]byte(d.cfg.DataDir + "\x00" + vnet))
	return d.cfg.BridgePrefix + hex.EncodeToString(sum[:])[:15-len(d.cfg.BridgePrefix)]
}

// ensureDefaultVNet records the configured default VNet. A changed config
// is applied only while no instance uses the VNet: moving running guests'
// addresses from under them would cut them off.
func (d *Daemon) ensureDefaultVNet() error {
	want := store.VNet{
		Name: d.cfg.VNet.Name, Bridge: d.cfg.VNet.Bridge, CIDR: d.cfg.VNet.Subnet, Egress: d.cfg.VNet.Egress.String(),
		Subnets:   []store.Subnet{{Name: d.cfg.VNet.SubnetName, CIDR: d.cfg.VNet.Subnet}},
		CreatedBy: "labvmd", CreatedAt: time.Now().UTC(),
	}
	return d.store.Update(func(tx *store.Tx) error {
		have, err := tx.VNet(want.Name)
		if errors.Is(err, store.ErrNotFound) {
			return tx.PutVNet(want)
		}
		if err != nil {
			return err
		}
		if have.Bridge == want.Bridge && have.CIDR == want.CIDR && have.Egress == want.Egress && len(have.Subnets) == 1 && have.Subnets[0] == want.Subnets[0] {
			return nil
		}
		if users := d.vnetUsers(tx, want.Name, ""); len(users) > 0 {
			d.log.Warn("default VNet config changed but instances use it; keeping the recorded one", "vnet", want.Name, "instances", users)
			return nil
		}
		want.CreatedAt = have.CreatedAt
		return tx.PutVNet(want)
	})
}

// vnetUsers names the instances in a VNet (and subnet, if given).
func (d *Daemon) vnetUsers(tx *store.Tx, vnet, subnet string) []string {
	list, _ := tx.Instances()
	var out []string
	for _, inst := range list {
		if inst.VNet == vnet && (subnet == "" || inst.Subnet == subnet) {
			out = append(out, inst.Name)
		}
	}
	return out
}

// syncNetworks makes the host match the recorded VNets: bridges with their
// gateways, forwarding for NAT, and the firewall in one transaction. It is
// idempotent and runs at start and after every network change.
func (d *Daemon) syncNetworks(ctx context.Context) error {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	var vnets []store.VNet
	if err := d.store.View(func(tx *store.Tx) error {
		var err error
		vnets, err = tx.VNets()
		return err
	}); err != nil {
		return err
	}
	spec := network.FirewallSpec{TableName: d.cfg.FirewallTable}
	if d.cfg.PhoneHomePort != 0 {
		spec.GatewayPorts = append(spec.GatewayPorts, network.GatewayPort{Proto: "tcp", Port: uint16(d.cfg.PhoneHomePort)})
	}
	nat := false
	for _, v := range vnets {
		b := network.Bridge{Name: v.Bridge}
		var gws []netip.Addr
		for _, s := range v.Subnets {
			gw := network.Gateway(s.CIDR)
			gws = append(gws, gw)
			b.Addresses = append(b.Addresses, netip.PrefixFrom(gw, s.CIDR.Bits()))
		}
		if err := d.net.EnsureBridge(ctx, b); err != nil {
			return fmt.Errorf("vnet %s: %w", v.Name, err)
		}
		egress, err := network.ParseEgress(v.Egress)
		if err != nil {
			return fmt.Errorf("vnet %s: %w", v.Name, err)
		}
		nat = nat || egress == network.EgressNAT
		spec.VNets = append(spec.VNets, network.FirewallVNet{Name: v.Name, Bridge: v.Bridge, Subnet: v.CIDR, Egress: egress, Gateways: gws})
	}
	if nat {
		if err := d.net.EnableForwarding(); err != nil {
			return fmt.Errorf("enable IPv4 forwarding for NAT egress: %w", err)
		}
	}
	if err := d.net.ApplyFirewall(ctx, spec); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	return nil
}

func apiVNet(v store.VNet, tx *store.Tx) api.VNet {
	out := api.VNet{Name: v.Name, Bridge: v.Bridge, CIDR: v.CIDR.String(), Egress: v.Egress, CreatedBy: v.CreatedBy, CreatedAt: v.CreatedAt, Subnets: []api.Subnet{}, Addresses: []api.Address{}}
	for _, s := range v.Subnets {
		out.Subnets = append(out.Subnets, api.Subnet{Name: s.Name, CIDR: s.CIDR.String(), Gateway: network.Gateway(s.CIDR).String()})
	}
	list, _ := tx.Instances()
	for _, inst := range list {
		if inst.VNet == v.Name && inst.IP.IsValid() {
			out.Addresses = append(out.Addresses, api.Address{IP: inst.IP.String(), Subnet: inst.Subnet, Instance: inst.Name, State: inst.State.String()})
		}
	}
	sort.Slice(out.Addresses, func(i, j int) bool {
		a, _ := netip.ParseAddr(out.Addresses[i].IP)
		b, _ := netip.ParseAddr(out.Addresses[j].IP)
		return a.Less(b)
	})
	return out
}

func (d *Daemon) listNetworks(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermRead); err != nil {
		return response{}, err
	}
	out := []api.VNet{}
	err := d.store.View(func(tx *store.Tx) error {
		vnets, err := tx.VNets()
		for _, v := range vnets {
			out = append(out, apiVNet(v, tx))
		}
		return err
	})
	return ok(out), err
}

func (d *Daemon) getNetwork(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermRead); err != nil {
		return response{}, err
	}
	var out api.VNet
	err := d.store.View(func(tx *store.Tx) error {
		v, err := d.vnet(tx, r.PathValue("name"))
		if err == nil {
			out = apiVNet(v, tx)
		}
		return err
	})
	return ok(out), err
}

func (d *Daemon) vnet(tx *store.Tx, name string) (store.VNet, error) {
	v, err := tx.VNet(name)
	if errors.Is(err, store.ErrNotFound) {
		return v, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("vnet %q not found", name), Hint: "`labvm network list` shows the VNets"}
	}
	return v, err
}

// parseCIDR reads an IPv4 CIDR the way users write it, explaining what
// is wrong with it.
func parseCIDR(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, invalidf("%s %q is not a CIDR like 10.80.0.0/16", what, s)
	}
	if err := network.ValidateSubnet(p); err != nil {
		return p, invalidf("%s: %v", what, err)
	}
	return p, nil
}

// checkFree refuses a CIDR that overlaps another VNet or a host route.
func (d *Daemon) checkFree(tx *store.Tx, p netip.Prefix, except string) error {
	vnets, err := tx.VNets()
	if err != nil {
		return err
	}
	var ours []string
	for _, v := range vnets {
		ours = append(ours, v.Bridge)
		if v.Name != except && v.CIDR.Overlaps(p) {
			return &api.Error{Code: api.CodeConflict, Message: fmt.Sprintf("%s overlaps vnet %s (%s)", p, v.Name, v.CIDR), Hint: "pick a CIDR no other VNet uses"}
		}
	}
	routes, err := d.net.RoutesOverlapping(p, ours...)
	if err != nil {
		return err
	}
	if len(routes) > 0 {
		return &api.Error{Code: api.CodeConflict, Message: fmt.Sprintf("%s overlaps the host's routes %s", p, strings.Join(routes, ", ")), Hint: "pick a CIDR the host does not already route (see `ip route`)"}
	}
	return nil
}

func (d *Daemon) createNetwork(r *http.Request, c Caller) (response, error) {
	var req api.CreateVNetRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	noteTarget(r, req.Name)
	if err := d.authorize(c, PermManageNetworks); err != nil {
		return response{}, err
	}
	if err := vm.ValidateNameOf("vnet", req.Name); err != nil {
		return response{}, err
	}
	cidr, err := parseCIDR("--cidr", req.CIDR)
	if err != nil {
		return response{}, err
	}
	egress := network.EgressNAT
	if req.Egress != "" {
		if egress, err = network.ParseEgress(req.Egress); err != nil {
			return response{}, invalidf("--egress %q: use nat or none", req.Egress)
		}
	}
	v := store.VNet{Name: req.Name, Bridge: d.bridgeName(req.Name), CIDR: cidr, Egress: egress.String(), Subnets: []store.Subnet{}, CreatedBy: c.Name, CreatedAt: time.Now().UTC()}
	return d.changeVNets(r.Context(), func(tx *store.Tx) (store.VNet, error) {
		if _, err := tx.VNet(req.Name); err == nil {
			return v, &api.Error{Code: api.CodeAlreadyExists, Message: fmt.Sprintf("vnet %q already exists", req.Name)}
		}
		if err := d.checkFree(tx, cidr, ""); err != nil {
			return v, err
		}
		return v, tx.CreateVNet(v)
	})
}

// changeVNets runs one VNet change in a transaction, then makes the host
// match (bridges, firewall) and answers with the changed VNet.
func (d *Daemon) changeVNets(ctx context.Context, change func(tx *store.Tx) (store.VNet, error)) (response, error) {
	var out api.VNet
	err := d.store.Update(func(tx *store.Tx) error {
		v, err := change(tx)
		if err != nil {
			return err
		}
		out = apiVNet(v, tx)
		return nil
	})
	if err != nil {
		return response{}, err
	}
	if err := d.syncNetworks(ctx); err != nil {
		return response{}, err
	}
	return ok(out), nil
}

func (d *Daemon) deleteNetwork(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermManageNetworks); err != nil {
		return response{}, err
	}
	name := r.PathValue("name")
	var bridge string
	err := d.store.Update(func(tx *store.Tx) error {
		v, err := d.vnet(tx, name)
		if err != nil {
			return err
		}
		if users := d.vnetUsers(tx, name, ""); len(users) > 0 {
			return fmt.Errorf("vnet %s is used by %s; delete those instances first: %w", name, strings.Join(users, ", "), errInUse)
		}
		bridge = v.Bridge
		return tx.DeleteVNet(name)
	})
	if err != nil {
		return response{}, err
	}
	if err := d.syncNetworks(r.Context()); err != nil {
		return response{}, err
	}
	if err := d.net.DeleteBridge(r.Context(), bridge); err != nil {
		return response{}, err
	}
	return ok(map[string]string{"deleted": name}), nil
}

func (d *Daemon) addSubnet(r *http.Request, c Caller) (response, error) {
	var req api.CreateSubnetRequest
	if err := decode(r, &req); err != nil {
		return response{}, err
	}
	vnetName := r.PathValue("name")
	noteTarget(r, vnetName+"/"+req.Name)
	if err := d.authorize(c, PermManageNetworks); err != nil {
		return response{}, err
	}
	if err := vm.ValidateNameOf("subnet", req.Name); err != nil {
		return response{}, err
	}
	cidr, err := parseCIDR("--cidr", req.CIDR)
	if err != nil {
		return response{}, err
	}
	return d.changeVNets(r.Context(), func(tx *store.Tx) (store.VNet, error) {
		v, err := d.vnet(tx, vnetName)
		if err != nil {
			return v, err
		}
		if !v.CIDR.Contains(cidr.Addr()) || cidr.Bits() < v.CIDR.Bits() {
			return v, invalidf("subnet %s is not inside vnet %s's %s", cidr, v.Name, v.CIDR)
		}
		for _, s := range v.Subnets {
			if s.Name == req.Name {
				return v, &api.Error{Code: api.CodeAlreadyExists, Message: fmt.Sprintf("subnet %q already exists in vnet %s", req.Name, v.Name)}
			}
			if s.CIDR.Overlaps(cidr) {
				return v, &api.Error{Code: api.CodeConflict, Message: fmt.Sprintf("%s overlaps subnet %s (%s)", cidr, s.Name, s.CIDR)}
			}
		}
		v.Subnets = append(v.Subnets, store.Subnet{Name: req.Name, CIDR: cidr})
		return v, tx.PutVNet(v)
	})
}

func (d *Daemon) removeSubnet(r *http.Request, c Caller) (response, error) {
	if err := d.authorize(c, PermManageNetworks); err != nil {
		return response{}, err
	}
	vnetName, subnet := r.PathValue("name"), r.PathValue("subnet")
	err := d.store.Update(func(tx *store.Tx) error {
		v, err := d.vnet(tx, vnetName)
		if err != nil {
			return err
		}
		if _, ok := v.Subnet(subnet); !ok {
			return &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("vnet %s has no subnet %q", vnetName, subnet)}
		}
		if users := d.vnetUsers(tx, vnetName, subnet); len(users) > 0 {
			return fmt.Errorf("subnet %s/%s is used by %s; delete those instances first: %w", vnetName, subnet, strings.Join(users, ", "), errInUse)
		}
		kept := v.Subnets[:0]
		for _, s := range v.Subnets {
			if s.Name != subnet {
				kept = append(kept, s)
			}
		}
		v.Subnets = kept
		return tx.PutVNet(v)
	})
	if err != nil {
		return response{}, err
	}
	if err := d.syncNetworks(r.Context()); err != nil {
		return response{}, err
	}
	return ok(map[string]string{"deleted": vnetName + "/" + subnet}), nil
}

// placement picks the VNet and subnet of a new instance, inside the
// create transaction.
func (d *Daemon) placement(tx *store.Tx, vnetName, subnetName string) (store.VNet, store.Subnet, error) {
	if vnetName == "" {
		vnetName = d.cfg.VNet.Name
	}
	v, err := tx.VNet(vnetName)
	if errors.Is(err, store.ErrNotFound) {
		return v, store.Subnet{}, invalidf("unknown vnet %q; `labvm network list` shows the VNets", vnetName)
	}
	if err != nil {
		return v, store.Subnet{}, err
	}
	if subnetName == "" {
		switch len(v.Subnets) {
		case 0:
			return v, store.Subnet{}, invalidf("vnet %s has no subnet; add one with `labvm network subnet add %s NAME --cidr CIDR`", v.Name, v.Name)
		case 1:
			return v, v.Subnets[0], nil
		}
		var names []string
		for _, s := range v.Subnets {
			names = append(names, s.Name)
		}
		return v, store.Subnet{}, invalidf("vnet %s has several subnets (%s); choose one with --subnet", v.Name, strings.Join(names, ", "))
	}
	s, ok := v.Subnet(subnetName)
	if !ok {
		return v, s, invalidf("unknown subnet %q in vnet %s; `labvm network show %s` lists its subnets", subnetName, v.Name, v.Name)
	}
	return v, s, nil
}
