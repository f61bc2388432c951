package libvirt

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/labvm/labvm/vm"
	virt "libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// unavailableHint is appended to connect failures because the usual cause
// on a dev host is simply that nobody started the daemon.
const unavailableHint = "is libvirtd running? start it with `libvirtd -d`"

// pollInterval paces WaitGone: short enough that a stop feels immediate,
// long enough not to load libvirtd while a guest takes minutes under TCG.
const pollInterval = 150 * time.Millisecond

func domainStatusOf(s virt.DomainState) vm.DomainStatus {
	switch s {
	case virt.DOMAIN_RUNNING:
		return vm.DomainRunning
	case virt.DOMAIN_PAUSED:
		return vm.DomainPaused
	case virt.DOMAIN_SHUTOFF:
		return vm.DomainShutoff
	}
	return vm.DomainOther
}

// Driver drives domains through one long-lived libvirt connection. It is
// safe for concurrent use and survives a libvirtd restart by reconnecting.
type Driver struct {
	uri string
	// mu is held shared for the duration of every libvirt call and
	// exclusively to replace or close conn, so a connection is never
	// freed while a call is still using it.
	mu   sync.RWMutex
	conn *virt.Connect

	// active caches the names of running domains by their libvirt id,
	// for ActiveDomainNames; activeConn is the connection it was read
	// through (another connection, after libvirtd restarted, may see ids
	// reused, so the cache starts again).
	activeMu   sync.Mutex
	active     map[uint32]string
	activeConn *virt.Connect
}

// Connect opens uri, e.g. "qemu:///system" or "test:///default".
func Connect(ctx context.Context, uri string) (*Driver, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", uri, err)
	}
	conn, err := dial(uri)
	if err != nil {
		return nil, err
	}
	return &Driver{uri: uri, conn: conn}, nil
}

func dial(uri string) (*virt.Connect, error) {
	conn, err := virt.NewConnect(uri)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w: %w (%s)", uri, vm.ErrUnavailable, err, unavailableHint)
	}
	return conn, nil
}

// Close releases the connection; later calls fail with vm.ErrUnavailable.
func (l *Driver) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	_, err := l.conn.Close()
	l.conn = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", l.uri, err)
	}
	return nil
}

// do runs fn on the live connection. If fn fails because libvirtd went
// away (it was restarted, typically), do reconnects once and retries, so
// callers never see a stale connection, only vm.ErrUnavailable when libvirtd
// is really gone. fn must be safe to run twice.
func (l *Driver) do(ctx context.Context, fn func(*virt.Connect) error) error {
	return l.run(ctx, true, fn)
}

func (l *Driver) run(ctx context.Context, retry bool, fn func(*virt.Connect) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, lost, err := l.call(fn)
	if !lost {
		return err
	}
	if err := l.reconnect(conn); err != nil {
		return err
	}
	if !retry {
		return fmt.Errorf("%w: connection lost during the call, not retried: %w", vm.ErrUnavailable, err)
	}
	if _, lost, err = l.call(fn); lost {
		return fmt.Errorf("%w: %w (%s)", vm.ErrUnavailable, err, unavailableHint)
	}
	return err
}

// call runs fn under the shared lock and reports which connection it used
// and whether that connection died, so a failure is blamed on that
// connection and no other. The liveness check happens under the lock too:
// once it is released a concurrent reconnect may free conn.
func (l *Driver) call(fn func(*virt.Connect) error) (conn *virt.Connect, lost bool, err error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.conn == nil {
		return nil, false, fmt.Errorf("%w: connection to %s is closed", vm.ErrUnavailable, l.uri)
	}
	err = fn(l.conn)
	return l.conn, err != nil && connectionLost(l.conn, err), err
}

// reconnect replaces broken unless another goroutine already did.
func (l *Driver) reconnect(broken *virt.Connect) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return fmt.Errorf("%w: connection to %s is closed", vm.ErrUnavailable, l.uri)
	}
	if l.conn != broken {
		return nil
	}
	conn, err := dial(l.uri)
	if err != nil {
		return err
	}
	// The old connection is dead; closing it only frees client memory,
	// so its error says nothing useful.
	_, _ = broken.Close()
	l.conn = conn
	return nil
}

// connectionLost tells a dead connection from an ordinary failure. The
// error codes only pre-filter; IsAlive is the authority, because e.g.
// INTERNAL_ERROR is also what a healthy libvirtd reports for many
// unrelated problems.
func connectionLost(conn *virt.Connect, err error) bool {
	var lerr virt.Error
	if !errors.As(err, &lerr) {
		return false
	}
	switch lerr.Code {
	case virt.ERR_SYSTEM_ERROR, virt.ERR_NO_CONNECT, virt.ERR_INTERNAL_ERROR,
		virt.ERR_INVALID_CONN, virt.ERR_RPC:
	default:
		return false
	}
	alive, aerr := conn.IsAlive()
	return aerr != nil || !alive
}

func hasCode(err error, codes ...virt.ErrorNumber) bool {
	var lerr virt.Error
	if !errors.As(err, &lerr) {
		return false
	}
	for _, c := range codes {
		if lerr.Code == c {
			return true
		}
	}
	return false
}

// withDomain looks name up and runs fn on it, mapping a missing domain to
// vm.ErrDomainNotFound. fn is retried after a reconnect, like do.
func (l *Driver) withDomain(ctx context.Context, name string, fn func(*virt.Domain) error) error {
	return l.run(ctx, true, onDomain(name, fn))
}

// withDomainOnce is withDomain for operations that must not be repeated,
// because the lost connection may have delivered the first attempt: it
// reconnects for the benefit of later calls but reports ErrUnavailable for
// this one.
func (l *Driver) withDomainOnce(ctx context.Context, name string, fn func(*virt.Domain) error) error {
	return l.run(ctx, false, onDomain(name, fn))
}

func onDomain(name string, fn func(*virt.Domain) error) func(*virt.Connect) error {
	return func(c *virt.Connect) error {
		dom, err := c.LookupDomainByName(name)
		if err != nil {
			if hasCode(err, virt.ERR_NO_DOMAIN) {
				return fmt.Errorf("%w: %s", vm.ErrDomainNotFound, name)
			}
			return err
		}
		defer dom.Free()
		return fn(dom)
	}
}

// StartDomain creates and boots a transient domain from xml. Transient
// means stopping it leaves nothing behind in libvirt: the instance record,
// not libvirt, is the source of truth for what should exist.
func (l *Driver) StartDomain(ctx context.Context, domainXML string) error {
	var def libvirtxml.Domain
	if err := def.Unmarshal(domainXML); err != nil {
		return fmt.Errorf("start domain: parse xml: %w", err)
	}
	err := l.do(ctx, func(c *virt.Connect) error {
		dom, err := c.DomainCreateXML(domainXML, virt.DOMAIN_NONE)
		if err != nil {
			// libvirt reports a name clash with several codes depending
			// on the driver, so ask directly.
			if existing, lerr := c.LookupDomainByName(def.Name); lerr == nil {
				existing.Free()
				return fmt.Errorf("%w: %w", vm.ErrDomainExists, err)
			}
			return err
		}
		return dom.Free()
	})
	if err != nil {
		return fmt.Errorf("start domain %s: %w", def.Name, err)
	}
	return nil
}

// Shutdown asks the guest to power off and returns without waiting; use
// WaitGone to wait and Destroy to give up.
func (l *Driver) Shutdown(ctx context.Context, name string) error {
	err := l.withDomain(ctx, name, func(d *virt.Domain) error {
		// ACPI first: it needs nothing from the guest but a kernel, while
		// the agent only exists once cloud-init installed and started it.
		acpiErr := d.ShutdownFlags(virt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
		if acpiErr == nil {
			return nil
		}
		agentErr := d.ShutdownFlags(virt.DOMAIN_SHUTDOWN_GUEST_AGENT)
		if agentErr == nil {
			return nil
		}
		// Drivers without shutdown modes (the test driver, for one)
		// reject both flags; let them use their only method.
		unsupported := []virt.ErrorNumber{virt.ERR_INVALID_ARG, virt.ERR_NO_SUPPORT, virt.ERR_ARGUMENT_UNSUPPORTED}
		if hasCode(acpiErr, unsupported...) && hasCode(agentErr, unsupported...) {
			return d.Shutdown()
		}
		return fmt.Errorf("acpi: %w; guest agent: %w", acpiErr, agentErr)
	})
	if err != nil {
		return fmt.Errorf("shutdown domain %s: %w", name, err)
	}
	return nil
}

// WaitGone polls until the domain no longer exists. Transient domains
// vanish as soon as QEMU exits, so absence is the signal that a shutdown
// finished.
func (l *Driver) WaitGone(ctx context.Context, name string) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		st, err := l.DomainState(ctx, name)
		if err != nil {
			return fmt.Errorf("wait for domain %s to stop: %w", name, err)
		}
		if st == vm.DomainAbsent {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for domain %s to stop (still %v): %w", name, st, ctx.Err())
		case <-t.C:
		}
	}
}

// Destroy stops the domain at once, like pulling the plug. A domain that
// is already gone is not an error, so callers can destroy unconditionally
// while cleaning up.
func (l *Driver) Destroy(ctx context.Context, name string) error {
	err := l.withDomain(ctx, name, func(d *virt.Domain) error {
		err := d.Destroy()
		// It may have exited between lookup and destroy.
		if hasCode(err, virt.ERR_NO_DOMAIN, virt.ERR_OPERATION_INVALID) {
			return nil
		}
		return err
	})
	if err != nil && !errors.Is(err, vm.ErrDomainNotFound) {
		return fmt.Errorf("destroy domain %s: %w", name, err)
	}
	return nil
}

// DomainState reports the domain's state; a missing domain is vm.DomainAbsent,
// not an error, because for transient domains absence is just "stopped".
func (l *Driver) DomainState(ctx context.Context, name string) (vm.DomainStatus, error) {
	status := vm.DomainAbsent
	err := l.withDomain(ctx, name, func(d *virt.Domain) error {
		st, _, err := d.GetState()
		if hasCode(err, virt.ERR_NO_DOMAIN) {
			return nil
		}
		if err != nil {
			return err
		}
		status = domainStatusOf(st)
		return nil
	})
	if errors.Is(err, vm.ErrDomainNotFound) {
		return vm.DomainAbsent, nil
	}
	if err != nil {
		return vm.DomainAbsent, fmt.Errorf("state of domain %s: %w", name, err)
	}
	return status, nil
}

// OwnedDomains lists the running domains that carry labvm metadata, sorted
// by name. Domains without it belong to someone else and are skipped.
func (l *Driver) OwnedDomains(ctx context.Context) ([]vm.OwnedDomain, error) {
	var owned []vm.OwnedDomain
	err := l.do(ctx, func(c *virt.Connect) error {
		owned = owned[:0]
		return withActiveDomains(c, func(doms []virt.Domain) error {
			for i := range doms {
				od, ok, err := ownedDomain(&doms[i])
				if err != nil {
					return err
				}
				if ok {
					owned = append(owned, od)
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list owned domains: %w", err)
	}
	sort.Slice(owned, func(i, j int) bool { return owned[i].Name < owned[j].Name })
	return owned, nil
}

// ActiveDomainNames is the set of running domains' names, labvm's or
// not. It is the guest watcher's look, every few seconds, so it must stay
// cheap at 10,000 domains: one virConnectListDomains call returns the
// running domains' ids (integers, no domain objects); only an id not seen
// before costs a lookup of its name, cached until the id is gone. Listing
// every domain object at each look (ListAllDomains) cost labvmd ~6 MB of
// RSS at 10,000 domains, in C heap that malloc keeps per thread.
func (l *Driver) ActiveDomainNames(ctx context.Context) (map[string]bool, error) {
	l.activeMu.Lock()
	defer l.activeMu.Unlock()
	var names map[string]bool
	err := l.do(ctx, func(c *virt.Connect) error {
		if c != l.activeConn || l.active == nil {
			l.active, l.activeConn = map[uint32]string{}, c
		}
		ids, err := c.ListDomains()
		if err != nil {
			return err
		}
		seen := make(map[uint32]bool, len(ids))
		names = make(map[string]bool, len(ids))
		for _, id := range ids {
			seen[id] = true
			name, ok := l.active[id]
			if !ok {
				d, err := c.LookupDomainById(id)
				if hasCode(err, virt.ERR_NO_DOMAIN) {
					continue // gone since the list
				}
				if err != nil {
					return fmt.Errorf("domain %d: %w", id, err)
				}
				name, err = d.GetName()
				_ = d.Free()
				if err != nil {
					return fmt.Errorf("name of domain %d: %w", id, err)
				}
				l.active[id] = name
			}
			names[name] = true
		}
		for id := range l.active {
			if !seen[id] {
				delete(l.active, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list active domains: %w", err)
	}
	return names, nil
}

// withActiveDomains lists the running domains in one call, hands them to
// fn and frees them after.
func withActiveDomains(c *virt.Connect, fn func(doms []virt.Domain) error) error {
	doms, err := c.ListAllDomains(virt.CONNECT_LIST_DOMAINS_ACTIVE)
	if err != nil {
		return err
	}
	defer func() {
		for i := range doms {
			_ = doms[i].Free()
		}
	}()
	return fn(doms)
}

// ownedDomain reads one domain's metadata. A domain that vanished since it
// was listed is simply not reported.
func ownedDomain(d *virt.Domain) (vm.OwnedDomain, bool, error) {
	gone := []virt.ErrorNumber{virt.ERR_NO_DOMAIN, virt.ERR_OPERATION_INVALID}
	name, err := d.GetName()
	if err != nil {
		return vm.OwnedDomain{}, false, fmt.Errorf("domain name: %w", err)
	}
	meta, err := d.GetMetadata(virt.DOMAIN_METADATA_ELEMENT, vm.MetadataNamespace, virt.DOMAIN_AFFECT_LIVE)
	if hasCode(err, append(gone, virt.ERR_NO_DOMAIN_METADATA)...) {
		return vm.OwnedDomain{}, false, nil
	}
	if err != nil {
		return vm.OwnedDomain{}, false, fmt.Errorf("metadata of domain %s: %w", name, err)
	}
	// Unreadable metadata in our namespace still marks the domain as
	// ours; it is reported without an id rather than failing the whole
	// list, so reconcile can treat it as an orphan.
	id, _ := parseInstanceMetadata(meta)
	st, _, err := d.GetState()
	if hasCode(err, gone...) {
		return vm.OwnedDomain{}, false, nil
	}
	if err != nil {
		return vm.OwnedDomain{}, false, fmt.Errorf("state of domain %s: %w", name, err)
	}
	return vm.OwnedDomain{Name: name, InstanceID: id, Status: domainStatusOf(st)}, true, nil
}

// parseInstanceMetadata extracts the instance id. Element names are
// matched without namespace because libvirt hands the element back with
// its namespace stripped or re-declared depending on version.
func parseInstanceMetadata(s string) (string, error) {
	var m struct {
		XMLName xml.Name `xml:"instance"`
		ID      string   `xml:"id"`
	}
	if err := xml.Unmarshal([]byte(s), &m); err != nil {
		return "", fmt.Errorf("parse labvm metadata: %w", err)
	}
	if m.ID == "" {
		return "", fmt.Errorf("parse labvm metadata: no instance id in %q", s)
	}
	return m.ID, nil
}
