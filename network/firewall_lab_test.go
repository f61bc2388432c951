package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/labvm/labvm/test/hostreq"
)

// This file builds throwaway network namespaces for the firewall tests, so
// the host's own firewall, bridges and routes are never touched:
//
//	outside (192.0.2.2) ── veth ── host (192.0.2.1, bridges, labvm table)
//	                                 ├─ bridge lvb1 10.250.1.1/24 ── guests
//	                                 └─ bridge lvb2 10.250.2.1/24 ── guests

const (
	labOutsideAddr = "192.0.2.2"
	labHostAddr    = "192.0.2.1"
	// labDialTimeout bounds each probe; rejected probes fail at once, only
	// dropped ones wait this long.
	labDialTimeout = 1500 * time.Millisecond
)

type fwLab struct {
	t       *testing.T
	id      string
	host    string // netns names
	outside string
	guests  map[string]string
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newFWLab makes the host and outside namespaces, joined by a veth, with
// forwarding on in the host. Everything is deleted in t.Cleanup.
func newFWLab(t *testing.T) *fwLab {
	t.Helper()
	hostreq.RequireRoot(t)
	hostreq.RequireTool(t, "ip", "iproute2")
	l := &fwLab{t: t, id: randomHex(t, 3), guests: map[string]string{}}
	l.host = l.addNetns("h")
	l.outside = l.addNetns("o")
	l.ip("-n", l.host, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", l.outside)
	l.ip("-n", l.host, "addr", "add", labHostAddr+"/24", "dev", "vout")
	l.ip("-n", l.host, "link", "set", "vout", "up")
	l.ip("-n", l.outside, "addr", "add", labOutsideAddr+"/24", "dev", "eth0")
	l.ip("-n", l.outside, "link", "set", "eth0", "up")
	// The outside knows a route to the VNets, so "outside cannot reach a
	// guest" is the firewall's doing, not a routing accident.
	l.ip("-n", l.outside, "route", "add", "10.250.0.0/16", "via", labHostAddr)
	l.sysctl(l.host, "net.ipv4.ip_forward", "1")
	return l
}

func (l *fwLab) addNetns(role string) string {
	l.t.Helper()
	name := fmt.Sprintf("lvfw-%s-%s", l.id, role)
	l.ip("netns", "add", name)
	l.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			l.t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	l.ip("-n", name, "link", "set", "lo", "up")
	return name
}

// run runs a command and fails the test with its output if it fails.
func (l *fwLab) run(name string, args ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *fwLab) ip(args ...string) { l.t.Helper(); l.run("ip", args...) }

// inHost runs a command inside the host namespace.
func (l *fwLab) inHost(args ...string) string {
	l.t.Helper()
	return l.run("ip", append([]string{"netns", "exec", l.host}, args...)...)
}

func (l *fwLab) sysctl(ns, key, value string) {
	l.t.Helper()
	l.run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", key+"="+value)
}

// addVNet creates a bridge with its gateway in the host namespace, using
// the package's own EnsureBridge.
func (l *fwLab) addVNet(bridge string, subnet netip.Prefix) {
	l.t.Helper()
	gw := netip.PrefixFrom(Gateway(subnet), subnet.Bits())
	err := inNetns(l.host, func() error {
		return EnsureBridge(context.Background(), Bridge{Name: bridge, Addresses: []netip.Prefix{gw}})
	})
	if err != nil {
		l.t.Fatalf("bridge %s: %v", bridge, err)
	}
}

// addGuest makes a guest namespace plugged into bridge, like a VM's tap.
func (l *fwLab) addGuest(name, bridge string, addr netip.Prefix) {
	l.t.Helper()
	ns := l.addNetns(name)
	l.guests[name] = ns
	port := "v" + name
	l.ip("-n", l.host, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	l.ip("-n", l.host, "link", "set", port, "master", bridge, "up")
	l.ip("-n", ns, "addr", "add", addr.String(), "dev", "eth0")
	l.ip("-n", ns, "link", "set", "eth0", "up")
	l.ip("-n", ns, "route", "add", "default", "via", Gateway(addr.Masked()).String())
}

// ns resolves a role ("host", "outside" or a guest name) to a netns name.
func (l *fwLab) ns(role string) string {
	switch role {
	case "host":
		return l.host
	case "outside":
		return l.outside
	}
	if ns, ok := l.guests[role]; ok {
		return ns
	}
	l.t.Fatalf("unknown lab role %q", role)
	return ""
}

// inNetns runs fn on a fresh OS thread switched into the named netns.
// The thread stays locked and dies with its goroutine, so no other code
// ever runs in the wrong namespace by accident.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer func() { _ = h.Close() }()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// listen serves TCP on addr in role's namespace; every client is told the
// address it was seen from, which reveals masquerading.
func (l *fwLab) listen(role, addr string) {
	l.t.Helper()
	var ln net.Listener
	err := inNetns(l.ns(role), func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		l.t.Fatalf("listen on %s in %s: %v", addr, role, err)
	}
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr())
			c.Close()
		}
	}()
}

// dial connects from role's namespace and returns the client address the
// server saw. control, if set, is the net.Dialer.Control func.
func (l *fwLab) dial(role, addr string, control func(string, string, syscall.RawConn) error) (string, error) {
	var seen string
	err := inNetns(l.ns(role), func() error {
		d := net.Dialer{Timeout: labDialTimeout, Control: control}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(labDialTimeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read greeting: %w", err)
		}
		seen = strings.TrimSpace(line)
		return nil
	})
	return seen, err
}

// apply and remove run the package's API inside the host namespace.
func (l *fwLab) apply(spec FirewallSpec) {
	l.t.Helper()
	if err := inNetns(l.host, func() error { return ApplyFirewall(context.Background(), spec) }); err != nil {
		l.t.Fatalf("ApplyFirewall: %v", err)
	}
}

func (l *fwLab) remove(table string) {
	l.t.Helper()
	if err := inNetns(l.host, func() error { return RemoveFirewall(context.Background(), table) }); err != nil {
		l.t.Fatalf("RemoveFirewall: %v", err)
	}
}
