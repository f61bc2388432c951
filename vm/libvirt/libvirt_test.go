package libvirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
	"github.com/labvm/labvm/vm"
)

// testDriverURI is libvirt's in-process mock hypervisor: no daemon, no
// root, no QEMU. All connections in one process share its state, so every
// test uses its own domain names.
const testDriverURI = "test:///default"

func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	l, err := Connect(t.Context(), testDriverURI)
	if err != nil {
		t.Fatalf("connect %s: %v", testDriverURI, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// requireSystem stops tests that need a real libvirtd as root when there is
// none (a failure under CI=true).
func requireSystem(t *testing.T) {
	t.Helper()
	hostreq.Require(t, os.Geteuid() == 0, "the test needs root for qemu:///system")
	_, err := os.Stat("/run/libvirt/libvirt-sock")
	hostreq.Require(t, err == nil, "libvirtd is not running (start it with `libvirtd -d`, or `make host`)")
}

func newSystem(t *testing.T) *Driver {
	t.Helper()
	requireSystem(t)
	l, err := Connect(t.Context(), "qemu:///system")
	if err != nil {
		t.Fatalf("connect qemu:///system: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// testSpec is a valid spec whose paths need not exist: the test driver
// never opens them.
func testSpec(name, id string, accel vm.Accel) vm.DomainSpec {
	dir := "/var/lib/labvm/instances/" + id
	return vm.DomainSpec{
		Name:       name,
		InstanceID: id,
		VCPUs:      2,
		MemoryMiB:  2048,
		DiskPath:   dir + "/disk.qcow2",
		SeedPath:   dir + "/seed.iso",
		Bridge:     "labvm0",
		MAC:        "52:54:00:12:34:56",
		ConsoleLog: dir + "/console.log",
		Accel:      accel,
	}
}

func startTestDomain(t *testing.T, l *Driver, spec vm.DomainSpec) {
	t.Helper()
	x, err := vm.DomainXML(spec)
	if err != nil {
		t.Fatalf("vm.DomainXML: %v", err)
	}
	if err := l.StartDomain(t.Context(), x); err != nil {
		t.Fatalf("StartDomain: %v", err)
	}
	t.Cleanup(func() { _ = l.Destroy(context.Background(), spec.Name) })
}

func TestConnectUnavailable(t *testing.T) {
	uri := "qemu+unix:///system?socket=" + filepath.Join(t.TempDir(), "no-such-sock")
	_, err := Connect(t.Context(), uri)
	if !errors.Is(err, vm.ErrUnavailable) {
		t.Fatalf("Connect(%s) = %v, want vm.ErrUnavailable", uri, err)
	}
	if !strings.Contains(err.Error(), "libvirtd -d") {
		t.Errorf("error %q lacks the hint to start libvirtd", err)
	}
}

func TestClosedLibvirt(t *testing.T) {
	l, err := Connect(t.Context(), testDriverURI)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.DomainState(t.Context(), "x"); !errors.Is(err, vm.ErrUnavailable) {
		t.Fatalf("DomainState after Close = %v, want vm.ErrUnavailable", err)
	}
}

func TestDomainLifecycleTestDriver(t *testing.T) {
	l := newTestDriver(t)
	ctx := t.Context()
	spec := testSpec("labvm-life-0000aaaa", "0000aaaa11112222", vm.AccelTCG)
	startTestDomain(t, l, spec)

	x, _ := vm.DomainXML(spec)
	if err := l.StartDomain(ctx, x); !errors.Is(err, vm.ErrDomainExists) {
		t.Errorf("second StartDomain = %v, want vm.ErrDomainExists", err)
	}
	if st, err := l.DomainState(ctx, spec.Name); err != nil || st != vm.DomainRunning {
		t.Errorf("DomainState = %v, %v; want running", st, err)
	}
	if err := l.Shutdown(ctx, spec.Name); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := l.WaitGone(waitCtx, spec.Name); err != nil {
		t.Fatalf("WaitGone after Shutdown: %v", err)
	}
	if st, err := l.DomainState(ctx, spec.Name); err != nil || st != vm.DomainAbsent {
		t.Errorf("DomainState after shutdown = %v, %v; want absent (transient)", st, err)
	}
}

func TestDestroyIdempotent(t *testing.T) {
	l := newTestDriver(t)
	ctx := t.Context()
	spec := testSpec("labvm-destroy-0000bbbb", "0000bbbb11112222", vm.AccelKVM)
	startTestDomain(t, l, spec)
	for i := range 3 {
		if err := l.Destroy(ctx, spec.Name); err != nil {
			t.Fatalf("Destroy #%d: %v", i+1, err)
		}
	}
	if st, _ := l.DomainState(ctx, spec.Name); st != vm.DomainAbsent {
		t.Errorf("state after destroy = %v, want absent", st)
	}
}

func TestMissingDomain(t *testing.T) {
	l := newTestDriver(t)
	ctx := t.Context()
	const name = "labvm-never-existed"
	tests := []struct {
		op      string
		call    func() error
		wantErr error
	}{
		{"Destroy", func() error { return l.Destroy(ctx, name) }, nil},
		{"WaitGone", func() error { return l.WaitGone(ctx, name) }, nil},
		{"Shutdown", func() error { return l.Shutdown(ctx, name) }, vm.ErrDomainNotFound},
		{"AgentPing", func() error { return l.AgentPing(ctx, name) }, vm.ErrDomainNotFound},
		{"Exec", func() error { _, err := l.Exec(ctx, name, vm.ExecRequest{Path: "/bin/true"}); return err }, vm.ErrDomainNotFound},
		{"DomainState", func() error {
			st, err := l.DomainState(ctx, name)
			if err == nil && st != vm.DomainAbsent {
				return errors.New("state " + st.String())
			}
			return err
		}, nil},
	}
	for _, tt := range tests {
		err := tt.call()
		if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
			t.Errorf("%s on missing domain = %v, want %v", tt.op, err, tt.wantErr)
		}
	}
}

func TestWaitGoneHonoursContext(t *testing.T) {
	l := newTestDriver(t)
	spec := testSpec("labvm-wait-0000cccc", "0000cccc11112222", vm.AccelTCG)
	startTestDomain(t, l, spec)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := l.WaitGone(ctx, spec.Name); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitGone on running domain = %v, want DeadlineExceeded", err)
	}
}

func TestOwnedDomains(t *testing.T) {
	l := newTestDriver(t)
	ours := testSpec("labvm-owned-0000dddd", "0000dddd11112222", vm.AccelTCG)
	startTestDomain(t, l, ours)

	// A domain someone else created: same shape, no labvm metadata.
	const foreign = "labvm-lookalike"
	if err := l.StartDomain(t.Context(), `<domain type='qemu'><name>`+foreign+`</name><memory unit='MiB'>128</memory><os><type arch='x86_64'>hvm</type></os></domain>`); err != nil {
		t.Fatalf("start foreign domain: %v", err)
	}
	t.Cleanup(func() { _ = l.Destroy(context.Background(), foreign) })

	owned, err := l.OwnedDomains(t.Context())
	if err != nil {
		t.Fatalf("OwnedDomains: %v", err)
	}
	found := false
	for _, d := range owned {
		switch d.Name {
		case ours.Name:
			found = true
			if d.InstanceID != ours.InstanceID || d.Status != vm.DomainRunning {
				t.Errorf("owned %s = %+v, want id %s running", d.Name, d, ours.InstanceID)
			}
		case foreign, "test":
			t.Errorf("OwnedDomains reported %s, which has no labvm metadata", d.Name)
		}
	}
	if !found {
		t.Errorf("OwnedDomains = %+v, missing %s", owned, ours.Name)
	}
}

func TestActiveDomainNames(t *testing.T) {
	l := newTestDriver(t)
	ours := testSpec("labvm-active-0000abab", "0000abab11112222", vm.AccelTCG)
	startTestDomain(t, l, ours)
	gone := testSpec("labvm-active-0000acac", "0000acac11112222", vm.AccelTCG)
	startTestDomain(t, l, gone)
	if err := l.Destroy(t.Context(), gone.Name); err != nil {
		t.Fatalf("Destroy: %v", err)
	}

	names, err := l.ActiveDomainNames(t.Context())
	if err != nil {
		t.Fatalf("ActiveDomainNames: %v", err)
	}
	for _, tc := range []struct {
		name string
		want bool
	}{
		{ours.Name, true},
		// The test driver's own running domain: every active domain is
		// listed, labvm's or not; the caller compares names it knows.
		{"test", true},
		{gone.Name, false},
		{"labvm-never-made", false},
	} {
		if names[tc.name] != tc.want {
			t.Errorf("ActiveDomainNames()[%q] = %v, want %v (got %v)", tc.name, names[tc.name], tc.want, names)
		}
	}
}

func TestAgentOnTestDriver(t *testing.T) {
	l := newTestDriver(t)
	spec := testSpec("labvm-agent-0000eeee", "0000eeee11112222", vm.AccelTCG)
	startTestDomain(t, l, spec)
	// The test driver has no agent, which is exactly what a booting guest
	// looks like to callers.
	if err := l.AgentPing(t.Context(), spec.Name); !errors.Is(err, vm.ErrAgentUnavailable) {
		t.Errorf("AgentPing = %v, want vm.ErrAgentUnavailable", err)
	}
	if _, err := l.Exec(t.Context(), spec.Name, vm.ExecRequest{Path: "/bin/true"}); !errors.Is(err, vm.ErrAgentUnavailable) {
		t.Errorf("Exec = %v, want vm.ErrAgentUnavailable", err)
	}
}

func TestParseInstanceMetadata(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{"stripped namespace", `<instance><id>abc123</id></instance>`, "abc123", false},
		{"default namespace", `<instance xmlns="https://labvm.dev/xmlns/instance/1"><id>abc123</id></instance>`, "abc123", false},
		{"prefixed", `<labvm:instance xmlns:labvm="https://labvm.dev/xmlns/instance/1"><labvm:id>x</labvm:id></labvm:instance>`, "x", false},
		{"no id", `<instance></instance>`, "", true},
		{"other element", `<owner><id>x</id></owner>`, "", true},
		{"garbage", `not xml`, "", true},
	}
	for _, tt := range tests {
		got, err := parseInstanceMetadata(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: parseInstanceMetadata = %q, %v; want %q, err %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

// cutProxy forwards a unix socket to libvirtd and can sever every open
// connection, which to a client looks exactly like libvirtd restarting,
// without disturbing the real daemon other users depend on.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, upstream string) (*cutProxy, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	go p.serve(upstream)
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p, path
}

func (p *cutProxy) serve(upstream string) {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("unix", upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		// A copy ends with an error when cut() closes the conns: that is
		// the point of the proxy.
		go func() { _, _ = io.Copy(u, c); u.Close() }()
		go func() { _, _ = io.Copy(c, u); c.Close() }()
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestReconnectAfterLibvirtdRestart(t *testing.T) {
	requireSystem(t)
	proxy, sock := newCutProxy(t, "/run/libvirt/libvirt-sock")
	l, err := Connect(t.Context(), "qemu+unix:///system?socket="+sock)
	if err != nil {
		t.Fatalf("connect through proxy: %v", err)
	}
	defer func() { _ = l.Close() }()
	if _, err := l.OwnedDomains(t.Context()); err != nil {
		t.Fatalf("OwnedDomains before cut: %v", err)
	}

	proxy.cut()
	if _, err := l.OwnedDomains(t.Context()); err != nil {
		t.Fatalf("OwnedDomains after cut, want transparent reconnect: %v", err)
	}

	proxy.ln.Close()
	proxy.cut()
	if _, err := l.DomainState(t.Context(), "labvm-none"); !errors.Is(err, vm.ErrUnavailable) {
		t.Fatalf("DomainState with libvirtd gone = %v, want vm.ErrUnavailable", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	l := newTestDriver(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			spec := testSpec(fmt.Sprintf("labvm-conc-%d", i), fmt.Sprintf("c0c0c0c0%08d", i), vm.AccelTCG)
			x, err := vm.DomainXML(spec)
			if err == nil {
				err = l.StartDomain(ctx, x)
			}
			if err == nil {
				_, err = l.OwnedDomains(ctx)
			}
			if err == nil {
				_, err = l.DomainState(ctx, spec.Name)
			}
			if err == nil {
				err = l.Destroy(ctx, spec.Name)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
