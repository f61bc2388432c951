// Package vnets owns the VNets and subnets: their records, the bridges
// that carry them (netlink) and the host firewall that isolates them
// (nftables), kept in step with the records at start and after every
// change, and the placement of a new instance on a subnet.
//
// It knows nothing of HTTP or of who may call it.
package vnets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
)

// HostNetwork is what VNets need from the host's networking; Kernel
// (netlink, nftables) is the real one.
type HostNetwork interface {
	EnsureBridge(ctx context.Context, b network.Bridge) error
	DeleteBridge(ctx context.Context, name string) error
	ApplyFirewall(ctx context.Context, spec network.FirewallSpec) error
	EnableForwarding() error
	RoutesOverlapping(p netip.Prefix, exclude ...string) ([]string, error)
}

// PortFirewall is a HostNetwork that can lock or unlock one instance's
// port without re-applying the whole firewall (network.AddPort and
// RemovePort). With a HostNetwork that cannot, the engine re-applies the
// whole firewall instead.
type PortFirewall interface {
	AddPort(ctx context.Context, table string, vnet network.FirewallVNet, port network.FirewallPort) error
	RemovePort(ctx context.Context, table string, vnet network.FirewallVNet, port network.FirewallPort) error
}

// Kernel is the real HostNetwork: netlink and nftables.
type Kernel struct{}

var (
	_ HostNetwork  = Kernel{}
	_ PortFirewall = Kernel{}
)

// VNetConfig describes the default VNet: a bridge and the one subnet on it.
type VNetConfig struct {
	Name       string
	Bridge     string
	SubnetName string
	Subnet     netip.Prefix
	Egress     network.EgressMode
}

// Config is the part of labvmd's config VNets use.
type Config struct {
	DataDir       string
	Default       VNetConfig
	FirewallTable string
	BridgePrefix  string
	// GatewayPorts are the daemon's ports guests may reach on their
	// gateway (phone-home).
	GatewayPorts []network.GatewayPort
}

// Engine owns the VNets: their records, the bridges and the firewall.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store
	net   HostNetwork
	// mu serialises host network changes (bridges, firewall).
	mu sync.Mutex
	// synced runs after every sync (the phone-home listener follows the
	// gateways).
	synced func()
}

// OnSync sets what runs after every successful sync.
func (e *Engine) OnSync(fn func()) { e.synced = fn }

// New returns an engine.
func New(cfg Config, st *store.Store, hn HostNetwork, log *slog.Logger) *Engine {
	return &Engine{cfg: cfg, store: st, net: hn, log: log}
}

// Setup records the default VNet and makes the host match the records.
func (e *Engine) Setup(ctx context.Context) error {
	if err := e.ensureDefaultVNet(); err != nil {
		return fmt.Errorf("default vnet: %w", err)
	}
	if err := e.Sync(ctx); err != nil {
		return fmt.Errorf("networks: %w", err)
	}
	return nil
}

// RoutesOverlapping is the host's routes overlapping p.
func (e *Engine) RoutesOverlapping(p netip.Prefix, exclude ...string) ([]string, error) {
	return e.net.RoutesOverlapping(p, exclude...)
}

func (Kernel) EnsureBridge(ctx context.Context, b network.Bridge) error {
	return network.EnsureBridge(ctx, b)
}

func (Kernel) DeleteBridge(ctx context.Context, name string) error {
	return network.DeleteBridge(ctx, name)
}

func (Kernel) ApplyFirewall(ctx context.Context, spec network.FirewallSpec) error {
	if len(spec.VNets) == 0 {
		return network.RemoveFirewall(ctx, spec.TableName)
	}
	return network.ApplyFirewall(ctx, spec)
}

func (Kernel) AddPort(ctx context.Context, table string, vnet network.FirewallVNet, port network.FirewallPort) error {
	return network.AddPort(ctx, table, vnet, port)
}

func (Kernel) RemovePort(ctx context.Context, table string, vnet network.FirewallVNet, port network.FirewallPort) error {
	return network.RemovePort(ctx, table, vnet, port)
}

// EnableForwarding turns on IPv4 forwarding, which NAT egress needs; it is
// what libvirt does for its NAT networks too.
func (Kernel) EnableForwarding() error {
	return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
}

func (Kernel) RoutesOverlapping(p netip.Prefix, exclude ...string) ([]string, error) {
	return network.RoutesOverlapping(p, exclude...)
}

// bridgeName derives a VNet's bridge: a prefix plus a hash of the data dir
// and the name, so two daemons (or a test daemon next to a real one)
// never share a bridge, and names fit the kernel's 15 characters.
func (e *Engine) bridgeName(vnet string) string {
	sum := sha256.Sum256([]byte(e.cfg.DataDir + "\x00" + vnet))
	return e.cfg.BridgePrefix + hex.EncodeToString(sum[:])[:15-len(e.cfg.BridgePrefix)]
}

// ensureDefaultVNet records the configured default VNet. A changed config
// is applied only while no instance uses the VNet: moving running guests'
// addresses from under them would cut them off.
func (e *Engine) ensureDefaultVNet() error {
	want := store.VNet{
		Name: e.cfg.Default.Name, Bridge: e.cfg.Default.Bridge, CIDR: e.cfg.Default.Subnet, Egress: e.cfg.Default.Egress.String(),
		Subnets:   []store.Subnet{{Name: e.cfg.Default.SubnetName, CIDR: e.cfg.Default.Subnet}},
		CreatedBy: "labvmd", CreatedAt: time.Now().UTC(),
	}
	return e.store.Update(func(tx *store.Tx) error {
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
		if users := e.vnetUsers(tx, want.Name, ""); len(users) > 0 {
			e.log.Warn("default VNet config changed but instances use it; keeping the recorded one", "vnet", want.Name, "instances", users)
			return nil
		}
		want.CreatedAt = have.CreatedAt
		return tx.PutVNet(want)
	})
}

// vnetUsers names the instances in a VNet (and subnet, if given).
func (e *Engine) vnetUsers(tx *store.Tx, vnet, subnet string) []string {
	list, _ := tx.Instances()
	var out []string
	for _, inst := range list {
		if inst.VNet == vnet && (subnet == "" || inst.Subnet == subnet) {
			out = append(out, inst.Name)
		}
	}
	return out
}

// Sync makes the host match the recorded VNets: bridges with their
// gateways, forwarding for NAT, and the firewall in one transaction. It is
// idempotent and runs at start and after every network change; a single
// instance's port is AddInstancePort's and RemoveInstancePort's.
func (e *Engine) Sync(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.syncLocked(ctx)
}

func (e *Engine) syncLocked(ctx context.Context) error {
	var vnets []store.VNet
	var list []vm.Instance
	if err := e.store.View(func(tx *store.Tx) error {
		var err error
		if vnets, err = tx.VNets(); err != nil {
			return err
		}
		list, err = tx.Instances()
		return err
	}); err != nil {
		return err
	}
	// Every guest NIC is locked to its own MAC and address, whatever
	// state its instance is in: a port name that exists only while the
	// instance runs costs nothing while it does not.
	spec := network.FirewallSpec{TableName: e.cfg.FirewallTable, GatewayPorts: e.cfg.GatewayPorts, LockPorts: true}
	ports := map[string][]network.FirewallPort{}
	for _, inst := range list {
		if port, ok := firewallPort(inst); ok {
			ports[inst.VNet] = append(ports[inst.VNet], port)
		}
	}
	nat := false
	for _, v := range vnets {
		fv, err := e.firewallVNet(v)
		if err != nil {
			return err
		}
		b := network.Bridge{Name: v.Bridge}
		for _, s := range v.Subnets {
			b.Addresses = append(b.Addresses, netip.PrefixFrom(network.Gateway(s.CIDR), s.CIDR.Bits()))
		}
		if err := e.net.EnsureBridge(ctx, b); err != nil {
			return fmt.Errorf("vnet %s: %w", v.Name, err)
		}
		nat = nat || fv.Egress == network.EgressNAT
		fv.Ports = ports[v.Name]
		spec.VNets = append(spec.VNets, fv)
	}
	if nat {
		if err := e.net.EnableForwarding(); err != nil {
			return fmt.Errorf("enable IPv4 forwarding for NAT egress: %w", err)
		}
	}
	if err := e.net.ApplyFirewall(ctx, spec); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	if e.synced != nil {
		e.synced()
	}
	return nil
}

// firewallVNet is v as the firewall sees it, without its ports.
func (e *Engine) firewallVNet(v store.VNet) (network.FirewallVNet, error) {
	egress, err := network.ParseEgress(v.Egress)
	if err != nil {
		return network.FirewallVNet{}, fmt.Errorf("vnet %s: %w", v.Name, err)
	}
	fv := network.FirewallVNet{Name: v.Name, Bridge: v.Bridge, Subnet: v.CIDR, Egress: egress, PeerTraffic: e.peerTraffic(v)}
	for _, s := range v.Subnets {
		fv.Gateways = append(fv.Gateways, network.Gateway(s.CIDR))
	}
	return fv, nil
}

// firewallPort is inst's NIC as the firewall sees it; an instance without
// an address (one whose create failed has given it back) has none.
func firewallPort(inst vm.Instance) (network.FirewallPort, bool) {
	if !inst.IP.IsValid() || inst.MAC == "" {
		return network.FirewallPort{}, false
	}
	return network.FirewallPort{Name: network.PortName(inst.ID), MAC: inst.MAC, IP: inst.IP}, true
}

// AddInstancePort locks a new instance's port to its MAC and address,
// before its domain boots, and changes nothing else of the host: a create
// costs the same however many instances there are. Where one port cannot
// be changed alone (a HostNetwork without PortFirewall, or a kernel table
// someone removed), the whole firewall is re-applied from the records,
// which hold the instance already.
func (e *Engine) AddInstancePort(ctx context.Context, inst vm.Instance) error {
	return e.changePort(ctx, inst, true)
}

// RemoveInstancePort unlocks the port of an instance that is gone or gave
// its address back, and changes nothing else; a port that is not there is
// no error. Like AddInstancePort, it falls back on re-applying the whole
// firewall from the records.
func (e *Engine) RemoveInstancePort(ctx context.Context, inst vm.Instance) error {
	return e.changePort(ctx, inst, false)
}

func (e *Engine) changePort(ctx context.Context, inst vm.Instance, add bool) error {
	// Creates and deletes run in parallel; one host firewall change at a
	// time, and none while a Sync rebuilds it.
	e.mu.Lock()
	defer e.mu.Unlock()
	ports, ok := e.net.(PortFirewall)
	if !ok {
		return e.syncLocked(ctx)
	}
	port, ok := firewallPort(inst)
	if !ok {
		if add {
			return fmt.Errorf("instance %s has no address to lock its port to", inst.Name)
		}
		// Its port went when its address did.
		return nil
	}
	var v store.VNet
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		v, err = tx.VNet(inst.VNet)
		return err
	})
	if errors.Is(err, store.ErrNotFound) && !add {
		// Deleting the VNet re-applied the firewall without it.
		return nil
	}
	if err != nil {
		return fmt.Errorf("vnet %s of %s: %w", inst.VNet, inst.Name, err)
	}
	fv, err := e.firewallVNet(v)
	if err != nil {
		return err
	}
	change := ports.RemovePort
	if add {
		change = ports.AddPort
	}
	if err := change(ctx, e.cfg.FirewallTable, fv, port); err != nil {
		if errors.Is(err, network.ErrInvalidFirewallSpec) || ctx.Err() != nil {
			return err
		}
		e.log.Warn("changing one port of the firewall failed; re-applying all of it", "instance", inst.Name, "port", port.Name, "add", add, "error", err)
		return e.syncLocked(ctx)
	}
	return nil
}

// peerTraffic is the VNet's setting; the default VNet, which every user
// shares, never lets guests reach each other.
func (e *Engine) peerTraffic(v store.VNet) network.PeerTraffic {
	if v.Name == e.cfg.Default.Name || v.PeerTraffic != network.PeerAllow.String() {
		return network.PeerDeny
	}
	return network.PeerAllow
}

// Wire is a VNet as the API shows it, with the addresses in use.
func Wire(v store.VNet, tx *store.Tx) api.VNet {
	peer := v.PeerTraffic
	if peer != network.PeerAllow.String() {
		peer = network.PeerDeny.String()
	}
	out := api.VNet{Name: v.Name, Bridge: v.Bridge, CIDR: v.CIDR.String(), Egress: v.Egress, PeerTraffic: peer, CreatedBy: v.CreatedBy, CreatedAt: v.CreatedAt, Subnets: []api.Subnet{}, Addresses: []api.Address{}}
	for _, s := range v.Subnets {
		out.Subnets = append(out.Subnets, api.Subnet{Name: s.Name, CIDR: s.CIDR.String(), Gateway: network.Gateway(s.CIDR).String()})
	}
	list, _ := tx.Instances()
	for _, inst := range list {
		if inst.VNet == v.Name && inst.IP.IsValid() {
			out.Addresses = append(out.Addresses, api.Address{IP: inst.IP.String(), Subnet: inst.Subnet, Instance: inst.Name, State: api.InstanceState(inst.State.String())})
		}
	}
	sort.Slice(out.Addresses, func(i, j int) bool {
		a, _ := netip.ParseAddr(out.Addresses[i].IP)
		b, _ := netip.ParseAddr(out.Addresses[j].IP)
		return a.Less(b)
	})
	return out
}

// List is every VNet.
func (e *Engine) List() ([]api.VNet, error) {
	out := []api.VNet{}
	err := e.store.View(func(tx *store.Tx) error {
		vnets, err := tx.VNets()
		for _, v := range vnets {
			out = append(out, Wire(v, tx))
		}
		return err
	})
	return out, err
}

// Get is one VNet.
func (e *Engine) Get(name string) (api.VNet, error) {
	var out api.VNet
	err := e.store.View(func(tx *store.Tx) error {
		v, err := e.vnet(tx, name)
		if err == nil {
			out = Wire(v, tx)
		}
		return err
	})
	return out, err
}

func (e *Engine) vnet(tx *store.Tx, name string) (store.VNet, error) {
	v, err := tx.VNet(name)
	if errors.Is(err, store.ErrNotFound) {
		return v, errdefs.New(errdefs.ErrNotFound, "`labvm network list` shows the VNets", "vnet %q not found", name)
	}
	return v, err
}

// parseCIDR reads an IPv4 CIDR the way users write it, explaining what
// is wrong with it.
func parseCIDR(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, errdefs.Invalidf("%s %q is not a CIDR like 10.80.0.0/16", what, s)
	}
	if err := network.ValidateCIDR(p); err != nil {
		return p, errdefs.Invalidf("%s: %v", what, err)
	}
	return p, nil
}

// checkFree refuses a CIDR that overlaps another VNet or a host route.
func (e *Engine) checkFree(tx *store.Tx, p netip.Prefix, except string) error {
	vnets, err := tx.VNets()
	if err != nil {
		return err
	}
	var ours []string
	for _, v := range vnets {
		ours = append(ours, v.Bridge)
		if v.Name != except && v.CIDR.Overlaps(p) {
			return errdefs.New(errdefs.ErrConflict, "pick a CIDR no other VNet uses", "%s overlaps vnet %s (%s)", p, v.Name, v.CIDR)
		}
	}
	routes, err := e.net.RoutesOverlapping(p, ours...)
	if err != nil {
		return err
	}
	if len(routes) > 0 {
		return errdefs.New(errdefs.ErrConflict, "pick a CIDR the host does not already route (see `ip route`)", "%s overlaps the host's routes %s", p, strings.Join(routes, ", "))
	}
	return nil
}

// Create makes a VNet: its record, bridge and firewall rules.
func (e *Engine) Create(ctx context.Context, createdBy string, req api.CreateVNetRequest) (api.VNet, error) {
	var response api.VNet
	if err := vm.ValidateNameOf("vnet", req.Name); err != nil {
		return response, err
	}
	cidr, err := parseCIDR("--cidr", req.CIDR)
	if err != nil {
		return response, err
	}
	egress := network.EgressNAT
	if req.Egress != "" {
		if egress, err = network.ParseEgress(req.Egress); err != nil {
			return response, errdefs.Invalidf("--egress %q: use nat or none", req.Egress)
		}
	}
	peer := network.PeerDeny
	if req.PeerTraffic != "" {
		if peer, err = network.ParsePeerTraffic(req.PeerTraffic); err != nil {
			return response, errdefs.Invalidf("--peer-traffic %q: use allow or deny", req.PeerTraffic)
		}
	}
	v := store.VNet{Name: req.Name, Bridge: e.bridgeName(req.Name), CIDR: cidr, Egress: egress.String(), PeerTraffic: peer.String(), Subnets: []store.Subnet{}, CreatedBy: createdBy, CreatedAt: time.Now().UTC()}
	return e.changeVNets(ctx, func(tx *store.Tx) (store.VNet, error) {
		if _, err := tx.VNet(req.Name); err == nil {
			return v, errdefs.New(errdefs.ErrAlreadyExists, "pick another name, or delete the existing VNet first", "vnet %q already exists", req.Name)
		}
		if err := e.checkFree(tx, cidr, ""); err != nil {
			return v, err
		}
		return v, tx.CreateVNet(v)
	})
}

// changeVNets runs one VNet change in a transaction, then makes the host
// match (bridges, firewall) and answers with the changed VNet.
func (e *Engine) changeVNets(ctx context.Context, change func(tx *store.Tx) (store.VNet, error)) (api.VNet, error) {
	var out api.VNet
	err := e.store.Update(func(tx *store.Tx) error {
		v, err := change(tx)
		if err != nil {
			return err
		}
		out = Wire(v, tx)
		return nil
	})
	if err != nil {
		return api.VNet{}, err
	}
	if err := e.Sync(ctx); err != nil {
		return api.VNet{}, err
	}
	return out, nil
}

// Delete removes an unused VNet, its bridge and its rules.
func (e *Engine) Delete(ctx context.Context, name string) error {
	var bridge string
	err := e.store.Update(func(tx *store.Tx) error {
		v, err := e.vnet(tx, name)
		if err != nil {
			return err
		}
		if users := e.vnetUsers(tx, name, ""); len(users) > 0 {
			return fmt.Errorf("vnet %s is used by %s; delete those instances first: %w", name, strings.Join(users, ", "), errdefs.ErrConflict)
		}
		bridge = v.Bridge
		return tx.DeleteVNet(name)
	})
	if err != nil {
		return err
	}
	if err := e.Sync(ctx); err != nil {
		return err
	}
	return e.net.DeleteBridge(ctx, bridge)
}

// AddSubnet adds a subnet to a VNet.
func (e *Engine) AddSubnet(ctx context.Context, vnetName string, req api.CreateSubnetRequest) (api.VNet, error) {
	var response api.VNet
	if err := vm.ValidateNameOf("subnet", req.Name); err != nil {
		return response, err
	}
	cidr, err := parseCIDR("--cidr", req.CIDR)
	if err != nil {
		return response, err
	}
	return e.changeVNets(ctx, func(tx *store.Tx) (store.VNet, error) {
		v, err := e.vnet(tx, vnetName)
		if err != nil {
			return v, err
		}
		if !v.CIDR.Contains(cidr.Addr()) || cidr.Bits() < v.CIDR.Bits() {
			return v, errdefs.Invalidf("subnet %s is not inside vnet %s's %s", cidr, v.Name, v.CIDR)
		}
		for _, s := range v.Subnets {
			if s.Name == req.Name {
				return v, errdefs.New(errdefs.ErrAlreadyExists, "", "subnet %q already exists in vnet %s", req.Name, v.Name)
			}
			if s.CIDR.Overlaps(cidr) {
				return v, errdefs.New(errdefs.ErrConflict, "", "%s overlaps subnet %s (%s)", cidr, s.Name, s.CIDR)
			}
		}
		v.Subnets = append(v.Subnets, store.Subnet{Name: req.Name, CIDR: cidr})
		return v, tx.PutVNet(v)
	})
}

// RemoveSubnet removes an unused subnet of a VNet.
func (e *Engine) RemoveSubnet(ctx context.Context, vnetName, subnet string) error {
	err := e.store.Update(func(tx *store.Tx) error {
		v, err := e.vnet(tx, vnetName)
		if err != nil {
			return err
		}
		if _, ok := v.Subnet(subnet); !ok {
			return errdefs.New(errdefs.ErrNotFound, "`labvm network show "+vnetName+"` lists its subnets", "vnet %s has no subnet %q", vnetName, subnet)
		}
		if users := e.vnetUsers(tx, vnetName, subnet); len(users) > 0 {
			return fmt.Errorf("subnet %s/%s is used by %s; delete those instances first: %w", vnetName, subnet, strings.Join(users, ", "), errdefs.ErrConflict)
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
		return err
	}
	return e.Sync(ctx)
}

// Place picks the VNet and subnet of a new instance, inside the
// create transaction.
func (e *Engine) Place(tx *store.Tx, vnetName, subnetName string) (store.VNet, store.Subnet, error) {
	if vnetName == "" {
		vnetName = e.cfg.Default.Name
	}
	v, err := tx.VNet(vnetName)
	if errors.Is(err, store.ErrNotFound) {
		return v, store.Subnet{}, errdefs.Invalidf("unknown vnet %q; `labvm network list` shows the VNets", vnetName)
	}
	if err != nil {
		return v, store.Subnet{}, err
	}
	if subnetName == "" {
		switch len(v.Subnets) {
		case 0:
			return v, store.Subnet{}, errdefs.Invalidf("vnet %s has no subnet; add one with `labvm network subnet add %s NAME --cidr CIDR`", v.Name, v.Name)
		case 1:
			return v, v.Subnets[0], nil
		}
		var names []string
		for _, s := range v.Subnets {
			names = append(names, s.Name)
		}
		return v, store.Subnet{}, errdefs.Invalidf("vnet %s has several subnets (%s); choose one with --subnet", v.Name, strings.Join(names, ", "))
	}
	s, ok := v.Subnet(subnetName)
	if !ok {
		return v, s, errdefs.Invalidf("unknown subnet %q in vnet %s; `labvm network show %s` lists its subnets", subnetName, v.Name, v.Name)
	}
	return v, s, nil
}
