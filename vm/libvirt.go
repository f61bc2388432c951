package vm

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

var (
	// ErrUnavailable means libvirtd cannot be reached, even after one
	// reconnect attempt.
	ErrUnavailable = errors.New("libvirt unavailable")
	// ErrDomainNotFound means no domain of that name exists.
	ErrDomainNotFound = errors.New("domain not found")
	// ErrDomainExists means a domain of that name is already running.
	ErrDomainExists = errors.New("domain already exists")
	// ErrAgentUnavailable means the guest agent is not connected or not
	// responding, typically because the guest is still booting.
	ErrAgentUnavailable = errors.New("guest agent unavailable")
	// ErrExecTimeout means a command run through the guest agent did not
	// exit before the caller's deadline. The process may still be running
	// in the guest: the agent has no way to kill it.
	ErrExecTimeout = errors.New("guest exec timed out")
)

// unavailableHint is appended to connect failures because the usual cause
// on a dev host is simply that nobody started the daemon.
const unavailableHint = "is libvirtd running? start it with `libvirtd -d`"

// pollInterval paces WaitGone: short enough that a stop feels immediate,
// long enough not to load libvirtd while a guest takes minutes under TCG.
const pollInterval = 150 * time.Millisecond

// DomainStatus is the coarse run state of a libvirt domain, reduced to
// what the daemon's reconcile loop distinguishes.
type DomainStatus int

const (
	DomainAbsent DomainStatus = iota
	DomainRunning
	DomainPaused
	DomainShutoff
	DomainOther
)

func (s DomainStatus) String() string {
	switch s {
	case DomainAbsent:
		return "absent"
	case DomainRunning:
		return "running"
	case DomainPaused:
		return "paused"
	case DomainShutoff:
		return "shutoff"
	case DomainOther:
		return "other"
	}
	return fmt.Sprintf("DomainStatus(%d)", int(s))
}

func domainStatusOf(s libvirt.DomainState) DomainStatus {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return DomainRunning
	case libvirt.DOMAIN_PAUSED:
		return DomainPaused
	case libvirt.DOMAIN_SHUTOFF:
		return DomainShutoff
	}
	return DomainOther
}

// OwnedDomain is a domain carrying labvm metadata.
type OwnedDomain struct {
	Name string
	// InstanceID is empty when the metadata is present but unreadable.
	InstanceID string
	Status     DomainStatus
}

// Libvirt drives domains through one long-lived libvirt connection. It is
// safe for concurrent use and survives a libvirtd restart by reconnecting.
type Libvirt struct {
	uri string
	// mu is held shared for the duration of every libvirt call and
	// exclusively to replace or close conn, so a connection is never
	// freed while a call is still using it.
	mu   sync.RWMutex
	conn *libvirt.Connect
}

// ConnectLibvirt opens uri, e.g. "qemu:///system" or "test:///default".
func ConnectLibvirt(ctx context.Context, uri string) (*Libvirt, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", uri, err)
	}
	conn, err := dial(uri)
	if err != nil {
		return nil, err
	}
	return &Libvirt{uri: uri, conn: conn}, nil
}

func dial(uri string) (*libvirt.Connect, error) {
	conn, err := libvirt.NewConnect(uri)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w: %w (%s)", uri, ErrUnavailable, err, unavailableHint)
	}
	return conn, nil
}

// Close releases the connection; later calls fail with ErrUnavailable.
func (l *Libvirt) Close() error {
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
// callers never see a stale connection, only ErrUnavailable when libvirtd
// is really gone. fn must be safe to run twice.
func (l *Libvirt) do(ctx context.Context, fn func(*libvirt.Connect) error) error {
	return l.run(ctx, true, fn)
}

func (l *Libvirt) run(ctx context.Context, retry bool, fn func(*libvirt.Connect) error) error {
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
		return fmt.Errorf("%w: connection lost during the call, not retried: %w", ErrUnavailable, err)
	}
	if _, lost, err = l.call(fn); lost {
		return fmt.Errorf("%w: %w (%s)", ErrUnavailable, err, unavailableHint)
	}
	return err
}

// call runs fn under the shared lock and reports which connection it used
// and whether that connection died, so a failure is blamed on that
// connection and no other. The liveness check happens under the lock too:
// once it is released a concurrent reconnect may free conn.
func (l *Libvirt) call(fn func(*libvirt.Connect) error) (conn *libvirt.Connect, lost bool, err error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.conn == nil {
		return nil, false, fmt.Errorf("%w: connection to %s is closed", ErrUnavailable, l.uri)
	}
	err = fn(l.conn)
	return l.conn, err != nil && connectionLost(l.conn, err), err
}

// reconnect replaces broken unless another goroutine already did.
func (l *Libvirt) reconnect(broken *libvirt.Connect) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return fmt.Errorf("%w: connection to %s is closed", ErrUnavailable, l.uri)
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
func connectionLost(conn *libvirt.Connect, err error) bool {
	var lerr libvirt.Error
	if !errors.As(err, &lerr) {
		return false
	}
	switch lerr.Code {
	case libvirt.ERR_SYSTEM_ERROR, libvirt.ERR_NO_CONNECT, libvirt.ERR_INTERNAL_ERROR,
		libvirt.ERR_INVALID_CONN, libvirt.ERR_RPC:
	default:
		return false
	}
	alive, aerr := conn.IsAlive()
	return aerr != nil || !alive
}

func hasCode(err error, codes ...libvirt.ErrorNumber) bool {
	var lerr libvirt.Error
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
// ErrDomainNotFound. fn is retried after a reconnect, like do.
func (l *Libvirt) withDomain(ctx context.Context, name string, fn func(*libvirt.Domain) error) error {
	return l.run(ctx, true, onDomain(name, fn))
}

// withDomainOnce is withDomain for operations that must not be repeated,
// because the lost connection may have delivered the first attempt: it
// reconnects for the benefit of later calls but reports ErrUnavailable for
// this one.
func (l *Libvirt) withDomainOnce(ctx context.Context, name string, fn func(*libvirt.Domain) error) error {
	return l.run(ctx, false, onDomain(name, fn))
}

func onDomain(name string, fn func(*libvirt.Domain) error) func(*libvirt.Connect) error {
	return func(c *libvirt.Connect) error {
		dom, err := c.LookupDomainByName(name)
		if err != nil {
			if hasCode(err, libvirt.ERR_NO_DOMAIN) {
				return fmt.Errorf("%w: %s", ErrDomainNotFound, name)
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
func (l *Libvirt) StartDomain(ctx context.Context, domainXML string) error {
	var def libvirtxml.Domain
	if err := def.Unmarshal(domainXML); err != nil {
		return fmt.Errorf("start domain: parse xml: %w", err)
	}
	err := l.do(ctx, func(c *libvirt.Connect) error {
		dom, err := c.DomainCreateXML(domainXML, libvirt.DOMAIN_NONE)
		if err != nil {
			// libvirt reports a name clash with several codes depending
			// on the driver, so ask directly.
			if existing, lerr := c.LookupDomainByName(def.Name); lerr == nil {
				existing.Free()
				return fmt.Errorf("%w: %w", ErrDomainExists, err)
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
func (l *Libvirt) Shutdown(ctx context.Context, name string) error {
	err := l.withDomain(ctx, name, func(d *libvirt.Domain) error {
		// ACPI first: it needs nothing from the guest but a kernel, while
		// the agent only exists once cloud-init installed and started it.
		acpiErr := d.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
		if acpiErr == nil {
			return nil
		}
		agentErr := d.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_GUEST_AGENT)
		if agentErr == nil {
			return nil
		}
		// Drivers without shutdown modes (the test driver, for one)
		// reject both flags; let them use their only method.
		unsupported := []libvirt.ErrorNumber{libvirt.ERR_INVALID_ARG, libvirt.ERR_NO_SUPPORT, libvirt.ERR_ARGUMENT_UNSUPPORTED}
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
func (l *Libvirt) WaitGone(ctx context.Context, name string) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		st, err := l.DomainState(ctx, name)
		if err != nil {
			return fmt.Errorf("wait for domain %s to stop: %w", name, err)
		}
		if st == DomainAbsent {
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
func (l *Libvirt) Destroy(ctx context.Context, name string) error {
	err := l.withDomain(ctx, name, func(d *libvirt.Domain) error {
		err := d.Destroy()
		// It may have exited between lookup and destroy.
		if hasCode(err, libvirt.ERR_NO_DOMAIN, libvirt.ERR_OPERATION_INVALID) {
			return nil
		}
		return err
	})
	if err != nil && !errors.Is(err, ErrDomainNotFound) {
		return fmt.Errorf("destroy domain %s: %w", name, err)
	}
	return nil
}

// DomainState reports the domain's state; a missing domain is DomainAbsent,
// not an error, because for transient domains absence is just "stopped".
func (l *Libvirt) DomainState(ctx context.Context, name string) (DomainStatus, error) {
	status := DomainAbsent
	err := l.withDomain(ctx, name, func(d *libvirt.Domain) error {
		st, _, err := d.GetState()
		if hasCode(err, libvirt.ERR_NO_DOMAIN) {
			return nil
		}
		if err != nil {
			return err
		}
		status = domainStatusOf(st)
		return nil
	})
	if errors.Is(err, ErrDomainNotFound) {
		return DomainAbsent, nil
	}
	if err != nil {
		return DomainAbsent, fmt.Errorf("state of domain %s: %w", name, err)
	}
	return status, nil
}

// OwnedDomains lists the running domains that carry labvm metadata, sorted
// by name. Domains without it belong to someone else and are skipped.
func (l *Libvirt) OwnedDomains(ctx context.Context) ([]OwnedDomain, error) {
	var owned []OwnedDomain
	err := l.do(ctx, func(c *libvirt.Connect) error {
		owned = owned[:0]
		doms, err := c.ListAllDomains(libvirt.CONNECT_LIST_DOMAINS_ACTIVE)
		if err != nil {
			return err
		}
		defer func() {
			for i := range doms {
				doms[i].Free()
			}
		}()
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
	if err != nil {
		return nil, fmt.Errorf("list owned domains: %w", err)
	}
	sort.Slice(owned, func(i, j int) bool { return owned[i].Name < owned[j].Name })
	return owned, nil
}

// ownedDomain reads one domain's metadata. A domain that vanished since it
// was listed is simply not reported.
func ownedDomain(d *libvirt.Domain) (OwnedDomain, bool, error) {
	gone := []libvirt.ErrorNumber{libvirt.ERR_NO_DOMAIN, libvirt.ERR_OPERATION_INVALID}
	name, err := d.GetName()
	if err != nil {
		return OwnedDomain{}, false, fmt.Errorf("domain name: %w", err)
	}
	meta, err := d.GetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, MetadataNamespace, libvirt.DOMAIN_AFFECT_LIVE)
	if hasCode(err, append(gone, libvirt.ERR_NO_DOMAIN_METADATA)...) {
		return OwnedDomain{}, false, nil
	}
	if err != nil {
		return OwnedDomain{}, false, fmt.Errorf("metadata of domain %s: %w", name, err)
	}
	// Unreadable metadata in our namespace still marks the domain as
	// ours; it is reported without an id rather than failing the whole
	// list, so reconcile can treat it as an orphan.
	id, _ := parseInstanceMetadata(meta)
	st, _, err := d.GetState()
	if hasCode(err, gone...) {
		return OwnedDomain{}, false, nil
	}
	if err != nil {
		return OwnedDomain{}, false, fmt.Errorf("state of domain %s: %w", name, err)
	}
	return OwnedDomain{Name: name, InstanceID: id, Status: domainStatusOf(st)}, true, nil
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
