package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/vm"
)

// fakeHypervisor stands in for libvirt in these unit tests of the
// daemon's own logic; the end-to-end tests use the real one.
type fakeHypervisor struct {
	mu      sync.Mutex
	domains map[string]string // name → instance id
	// startErr, when set, makes StartDomain fail.
	startErr error
	// startGate, when set, blocks StartDomain until closed.
	startGate chan struct{}
}

var _ Hypervisor = (*fakeHypervisor)(nil)

var (
	nameRe = regexp.MustCompile(`<name>([^<]+)</name>`)
	idRe   = regexp.MustCompile(`<labvm:id>([^<]+)</labvm:id>`)
)

func newFakeHypervisor() *fakeHypervisor { return &fakeHypervisor{domains: map[string]string{}} }

func (f *fakeHypervisor) StartDomain(ctx context.Context, xml string) error {
	f.mu.Lock()
	gate, err := f.startGate, f.startErr
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	name := nameRe.FindStringSubmatch(xml)[1]
	id := ""
	if m := idRe.FindStringSubmatch(xml); m != nil {
		id = m[1]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.domains[name]; ok {
		return fmt.Errorf("domain %s already running", name)
	}
	f.domains[name] = id
	return nil
}

func (f *fakeHypervisor) Shutdown(ctx context.Context, name string) error {
	return f.Destroy(ctx, name)
}
func (f *fakeHypervisor) WaitGone(ctx context.Context, name string) error { return nil }

func (f *fakeHypervisor) Destroy(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.domains, name)
	return nil
}

func (f *fakeHypervisor) DomainState(ctx context.Context, name string) (vm.DomainStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.domains[name]; ok {
		return vm.DomainRunning, nil
	}
	return vm.DomainAbsent, nil
}

func (f *fakeHypervisor) OwnedDomains(ctx context.Context) ([]vm.OwnedDomain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []vm.OwnedDomain
	for name, id := range f.domains {
		out = append(out, vm.OwnedDomain{Name: name, InstanceID: id, Status: vm.DomainRunning})
	}
	return out, nil
}

func (f *fakeHypervisor) AgentPing(ctx context.Context, name string) error {
	if st, _ := f.DomainState(ctx, name); st != vm.DomainRunning {
		return vm.ErrAgentUnavailable
	}
	return nil
}

func (f *fakeHypervisor) Exec(ctx context.Context, name string, req vm.ExecRequest) (vm.ExecResult, error) {
	return vm.ExecResult{Stdout: []byte(strings.Join(append([]string{req.Path}, req.Args...), " "))}, nil
}

func (f *fakeHypervisor) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.domains)
}

// fakeNetwork records what the daemon asks of the host's networking.
type fakeNetwork struct {
	mu       sync.Mutex
	bridges  map[string]network.Bridge
	firewall network.FirewallSpec
	// routes are host routes RoutesOverlapping reports.
	routes []netip.Prefix
}

func newFakeNetwork() *fakeNetwork { return &fakeNetwork{bridges: map[string]network.Bridge{}} }

func (f *fakeNetwork) EnsureBridge(ctx context.Context, b network.Bridge) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bridges[b.Name] = b
	return nil
}

func (f *fakeNetwork) DeleteBridge(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.bridges, name)
	return nil
}

func (f *fakeNetwork) ApplyFirewall(ctx context.Context, spec network.FirewallSpec) error {
	if _, err := network.BuildFirewall(spec); err != nil && len(spec.VNets) > 0 {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.firewall = spec
	return nil
}

func (f *fakeNetwork) EnableForwarding() error { return nil }

func (f *fakeNetwork) RoutesOverlapping(p netip.Prefix, exclude ...string) ([]string, error) {
	var out []string
	for _, r := range f.routes {
		if r.Overlaps(p) {
			out = append(out, r.String())
		}
	}
	return out, nil
}

type testDaemon struct {
	*Daemon
	hv     *fakeHypervisor
	net    *fakeNetwork
	client *client.Client
	cancel context.CancelFunc
	done   chan error
}

func newTestDaemon(t *testing.T, hv *fakeHypervisor, seed func(tx *store.Tx) error) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.SocketPath = filepath.Join(dir, "labvm.sock")
	cfg.SocketGroup = ""
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.PhoneHomePort = 0
	cfg.ReadyTimeout = 5 * time.Second
	cfg.Accel = vm.AccelForceTCG
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fn := newFakeNetwork()
	fn.routes = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	d, err := New(context.Background(), cfg, Options{Log: log, Hypervisor: hv, Network: fn})
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(cfg.DataDir, "images", "base.qcow2")
	os.WriteFile(base, []byte("not really qcow2; the fake hypervisor never reads it"), 0o444)
	if err := d.store.Update(func(tx *store.Tx) error {
		if err := tx.CreateImage(store.Image{Name: "tiny", Digest: strings.Repeat("a", 64), Path: base, VirtualSize: 512 << 20}); err != nil {
			return err
		}
		if seed != nil {
			return seed(tx)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{Daemon: d, hv: hv, net: fn, client: client.New(cfg.SocketPath), cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() { td.done <- d.Run(ctx, nil, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-td.done:
		t.Fatalf("daemon exited: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-td.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		d.Close()
	})
	return td
}

func (td *testDaemon) create(t *testing.T, req api.CreateInstanceRequest) (api.Operation, error) {
	t.Helper()
	ctx := context.Background()
	op, err := td.client.CreateInstance(ctx, req)
	if err != nil {
		return op, err
	}
	return td.client.Wait(ctx, op.ID, nil)
}

func tinyReq(name string) api.CreateInstanceRequest {
	return api.CreateInstanceRequest{Name: name, Size: "Standard_B1s", Image: "tiny"}
}

func TestLifecycleThroughAPI(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	ctx := context.Background()
	c := td.client

	op, err := td.create(t, tinyReq("alice-dev"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	wantStages := []string{"Creating disk", "Writing cloud-init seed", "Starting domain", "Waiting for the guest"}
	if len(op.Stages) != len(wantStages) {
		t.Fatalf("stages = %+v", op.Stages)
	}
	for i, s := range op.Stages {
		if s.Name != wantStages[i] || s.DoneAt == nil {
			t.Errorf("stage %d = %+v, want %q done", i, s, wantStages[i])
		}
	}
	inst, err := c.Instance(ctx, "alice-dev")
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != "Running" || inst.DiskVirtual != 120<<30 || inst.IP != "10.177.0.10" || inst.SSH {
		t.Fatalf("instance = %+v", inst)
	}
	if _, err := os.Stat(td.seedPath(inst.ID)); err != nil {
		t.Fatalf("seed: %v", err)
	}

	steps := []struct {
		do        func() (api.Operation, error)
		wantState string
		wantCode  api.Code
	}{
		{func() (api.Operation, error) { return c.Start(ctx, "alice-dev") }, "Running", api.CodeConflict},
		{func() (api.Operation, error) { return c.Stop(ctx, "alice-dev") }, "Stopped", ""},
		{func() (api.Operation, error) { return c.Stop(ctx, "alice-dev") }, "Stopped", api.CodeConflict},
		{func() (api.Operation, error) { return c.Restart(ctx, "alice-dev") }, "Stopped", api.CodeConflict},
		{func() (api.Operation, error) { return c.Start(ctx, "alice-dev") }, "Running", ""},
		{func() (api.Operation, error) { return c.Restart(ctx, "alice-dev") }, "Running", ""},
	}
	for i, st := range steps {
		op, err := st.do()
		if err == nil {
			_, err = c.Wait(ctx, op.ID, nil)
		}
		if st.wantCode == "" && err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if st.wantCode != "" && !api.IsCode(err, st.wantCode) {
			t.Fatalf("step %d: err = %v, want code %s", i, err, st.wantCode)
		}
		got, _ := c.Instance(ctx, "alice-dev")
		if got.State != st.wantState {
			t.Fatalf("step %d: state %s, want %s", i, got.State, st.wantState)
		}
		if got.IP != inst.IP {
			t.Fatalf("step %d: IP changed from %s to %s", i, inst.IP, got.IP)
		}
	}

	res, err := c.Exec(ctx, "alice-dev", api.ExecRequest{Command: []string{"cat", "/etc/hostname"}})
	if err != nil || string(res.Stdout) != "cat /etc/hostname" {
		t.Fatalf("exec = %+v, %v", res, err)
	}
	if _, err := c.Exec(ctx, "alice-dev", api.ExecRequest{}); !api.IsCode(err, api.CodeInvalidArgument) {
		t.Fatalf("exec without command: %v", err)
	}

	op, err = c.Delete(ctx, "alice-dev")
	if err == nil {
		_, err = c.Wait(ctx, op.ID, nil)
	}
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Instance(ctx, "alice-dev"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := os.Stat(td.cfg.instanceDir(inst.ID)); !os.IsNotExist(err) {
		t.Fatalf("instance dir still there: %v", err)
	}
	if td.hv.running() != 0 {
		t.Fatal("domain left after delete")
	}
	td.assertNoIPs(t)
}

func (td *testDaemon) assertNoIPs(t *testing.T) {
	t.Helper()
	td.store.View(func(tx *store.Tx) error {
		allocs, _ := tx.IPAllocations("default")
		if len(allocs) != 0 {
			t.Errorf("addresses still allocated: %+v", allocs)
		}
		return nil
	})
}

func TestCreateRejectsBadInputAndChangesNothing(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	tests := []struct {
		name string
		mod  func(r *api.CreateInstanceRequest)
		code api.Code
		msg  string
	}{
		{"short name", func(r *api.CreateInstanceRequest) { r.Name = "ab" }, api.CodeInvalidArgument, "3-24 characters"},
		{"NUL in name", func(r *api.CreateInstanceRequest) { r.Name = "ab\x00cd" }, api.CodeInvalidArgument, "invalid instance name"},
		{"path in name", func(r *api.CreateInstanceRequest) { r.Name = "../../etc" }, api.CodeInvalidArgument, "invalid instance name"},
		{"huge name", func(r *api.CreateInstanceRequest) { r.Name = strings.Repeat("a", 100000) }, api.CodeInvalidArgument, "invalid instance name"},
		{"unknown size", func(r *api.CreateInstanceRequest) { r.Size = "Huge" }, api.CodeInvalidArgument, "unknown size"},
		{"unknown image", func(r *api.CreateInstanceRequest) { r.Image = "nope" }, api.CodeInvalidArgument, "unknown image"},
		{"disk below image", func(r *api.CreateInstanceRequest) { r.DiskSize = "256M" }, api.CodeInvalidArgument, "below the image's size"},
		{"disk garbage", func(r *api.CreateInstanceRequest) { r.DiskSize = "big" }, api.CodeInvalidArgument, "--disk-size"},
		{"ssh key garbage", func(r *api.CreateInstanceRequest) { r.SSHPublicKey = "ssh-rsa !!!" }, api.CodeInvalidArgument, "--ssh-key"},
		{"ssh key injection", func(r *api.CreateInstanceRequest) {
			r.SSHPublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\nruncmd: [reboot]"
		}, api.CodeInvalidArgument, "--ssh-key"},
		{"unknown vnet", func(r *api.CreateInstanceRequest) { r.VNet = "other" }, api.CodeInvalidArgument, "unknown vnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tinyReq("bob-dev")
			tt.mod(&req)
			_, err := td.client.CreateInstance(context.Background(), req)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tt.code || !strings.Contains(ae.Message, tt.msg) {
				t.Fatalf("err = %v, want %s mentioning %q", err, tt.code, tt.msg)
			}
			list, _ := td.client.Instances(context.Background())
			if len(list) != 0 {
				t.Fatalf("instances after refused create: %+v", list)
			}
			if dirs, _ := os.ReadDir(td.cfg.instancesDir()); len(dirs) != 0 {
				t.Fatalf("files after refused create: %v", dirs)
			}
			td.assertNoIPs(t)
		})
	}
}

func TestCreateFailureRollsBack(t *testing.T) {
	hv := newFakeHypervisor()
	hv.startErr = errors.New("qemu: could not open backing file")
	td := newTestDaemon(t, hv, nil)
	_, err := td.create(t, tinyReq("doomed"))
	if err == nil || !strings.Contains(err.Error(), "could not open backing file") {
		t.Fatalf("create error = %v", err)
	}
	inst, err := td.client.Instance(context.Background(), "doomed")
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != "CreateFailed" || !strings.Contains(inst.StateReason, "backing file") {
		t.Fatalf("instance = %s %q", inst.State, inst.StateReason)
	}
	if _, err := os.Stat(td.cfg.instanceDir(inst.ID)); !os.IsNotExist(err) {
		t.Fatalf("instance dir left after failed create: %v", err)
	}
	td.assertNoIPs(t)
	op, err := td.client.Delete(context.Background(), "doomed")
	if err == nil {
		_, err = td.client.Wait(context.Background(), op.ID, nil)
	}
	if err != nil {
		t.Fatalf("delete of CreateFailed: %v", err)
	}
}

func TestOneOperationPerInstance(t *testing.T) {
	hv := newFakeHypervisor()
	hv.startGate = make(chan struct{})
	td := newTestDaemon(t, hv, nil)
	ctx := context.Background()
	op, err := td.client.CreateInstance(ctx, tinyReq("busy-one"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = td.client.Delete(ctx, "busy-one")
	if !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), op.ID) {
		t.Fatalf("second operation: %v; want Conflict naming %s", err, op.ID)
	}
	close(hv.startGate)
	if _, err := td.client.Wait(ctx, op.ID, nil); err != nil {
		t.Fatal(err)
	}
}

// TestParallelCreatesGetDistinctAddresses: 20 creates at once all
// succeed, each with its own address.
func TestParallelCreatesGetDistinctAddresses(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := td.create(t, tinyReq(fmt.Sprintf("par-%02d", i)))
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	list, _ := td.client.Instances(context.Background())
	seen := map[string]bool{}
	for _, i := range list {
		if seen[i.IP] {
			t.Fatalf("address %s handed out twice", i.IP)
		}
		seen[i.IP] = true
	}
	if len(seen) != n {
		t.Fatalf("%d instances, want %d", len(seen), n)
	}
}

func TestRequestDecodingIsStrict(t *testing.T) {
	td := newTestDaemon(t, newFakeHypervisor(), nil)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", td.cfg.SocketPath)
	}}}
	tests := []struct {
		name, body string
		status     int
		code       api.Code
	}{
		{"unknown field", `{"name":"abc","size":"Standard_B1s","image":"tiny","colour":"red"}`, 400, api.CodeInvalidArgument},
		{"wrong type", `{"name":42}`, 400, api.CodeInvalidArgument},
		{"empty", ``, 400, api.CodeInvalidArgument},
		{"trailing data", `{"name":"abc"} {}`, 400, api.CodeInvalidArgument},
		{"too large", `{"name":"` + strings.Repeat("a", 2<<20) + `"}`, 413, api.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := hc.Post("http://labvmd/v1/instances", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), string(tt.code)) {
				t.Fatalf("status %d body %s; want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
		})
	}
	resp, err := hc.Get("http://labvmd/v2/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
}

func TestReconcileFinishesInterruptedWork(t *testing.T) {
	now := time.Now().UTC()
	mk := func(name string, s vm.State, ip string) vm.Instance {
		id := vm.NewID()
		return vm.Instance{ID: id, Name: name, State: s, Domain: vm.DomainName(name, id), VNet: "default",
			IP: netip.MustParseAddr(ip), Prefix: 24, Size: vm.DefaultSizes()[0], Image: "tiny", CreatedAt: now}
	}
	creating := mk("was-creating", vm.StateCreating, "10.177.0.10")
	deleting := mk("was-deleting", vm.StateDeleting, "10.177.0.11")
	running := mk("was-running", vm.StateRunning, "10.177.0.12")
	hv := newFakeHypervisor()
	td := newTestDaemon(t, hv, func(tx *store.Tx) error {
		for _, inst := range []vm.Instance{creating, deleting, running} {
			if err := tx.CreateInstance(inst); err != nil {
				return err
			}
			if err := tx.AllocateIP("default", inst.IP, inst.ID); err != nil {
				return err
			}
		}
		return nil
	})
	ctx := context.Background()
	got, err := td.client.Instance(ctx, "was-creating")
	if err != nil || got.State != "CreateFailed" {
		t.Fatalf("interrupted create: %+v %v", got, err)
	}
	if _, err := td.client.Instance(ctx, "was-deleting"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("interrupted delete not finished: %v", err)
	}
	// Its disk is missing, so it is kept, marked Unknown, never dropped.
	got, err = td.client.Instance(ctx, "was-running")
	if err != nil || got.State != "Unknown" || !strings.Contains(got.StateReason, "missing") {
		t.Fatalf("running without disk: %+v %v", got, err)
	}
}

// noAgent is a hypervisor whose guests never answer, like test:///default.
type noAgent struct{ *fakeHypervisor }

func (noAgent) AgentPing(ctx context.Context, name string) error { return vm.ErrAgentUnavailable }

// TestReadyProbeNone: with --ready-probe none a running domain is ready
// at once, without a guest agent; a domain that is not running is not.
func TestReadyProbeNone(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReadyProbe = "bogus"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ready probe") {
		t.Fatalf("Validate with ready probe bogus = %v", err)
	}
	cfg.ReadyProbe = ReadyProbeNone
	cfg.ReadyTimeout = time.Minute
	hv := newFakeHypervisor()
	d := &Daemon{cfg: cfg, hv: noAgent{hv}}
	hv.domains["labvm-a-12345678"] = "1234567890abcdef"
	start := time.Now()
	if err := d.waitReady(context.Background(), vm.Instance{ID: "1234567890abcdef", Domain: "labvm-a-12345678"}, nil); err != nil {
		t.Fatalf("running domain: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("ready took %s, want at once", took)
	}
	if err := d.waitReady(context.Background(), vm.Instance{ID: "2234567890abcdef", Domain: "labvm-b-22345678"}, nil); err == nil {
		t.Fatal("absent domain reported ready")
	}
}
