package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/lifecycle"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

func TestLifecycleThroughAPI(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx := context.Background()
	c := td.Client

	op, err := td.Create(t, daemontest.TinyReq("alice-dev"))
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
	if inst.State != api.StateRunning || inst.DiskVirtual != 120<<30 || inst.IP != "10.177.0.10" || inst.SSH {
		t.Fatalf("instance = %+v", inst)
	}
	if _, err := os.Stat(td.Paths.Seed(inst.ID)); err != nil {
		t.Fatalf("seed: %v", err)
	}

	steps := []struct {
		do        func() (api.Operation, error)
		wantState api.InstanceState
		wantCode  api.Code
	}{
		{func() (api.Operation, error) { return c.Start(ctx, "alice-dev") }, api.StateRunning, api.CodeConflict},
		{func() (api.Operation, error) { return c.Stop(ctx, "alice-dev") }, api.StateStopped, ""},
		{func() (api.Operation, error) { return c.Stop(ctx, "alice-dev") }, api.StateStopped, api.CodeConflict},
		{func() (api.Operation, error) { return c.Restart(ctx, "alice-dev") }, api.StateStopped, api.CodeConflict},
		{func() (api.Operation, error) { return c.Start(ctx, "alice-dev") }, api.StateRunning, ""},
		{func() (api.Operation, error) { return c.Restart(ctx, "alice-dev") }, api.StateRunning, ""},
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
	if _, err := os.Stat(td.Paths.Dir(inst.ID)); !os.IsNotExist(err) {
		t.Fatalf("instance dir still there: %v", err)
	}
	if td.HV.Running() != 0 {
		t.Fatal("domain left after delete")
	}
	assertNoIPs(t, td)
}

func assertNoIPs(t *testing.T, td *daemontest.Daemon) {
	t.Helper()
	if err := td.Store().View(func(tx *store.Tx) error {
		allocs, _ := tx.IPAllocations("default")
		if len(allocs) != 0 {
			t.Errorf("addresses still allocated: %+v", allocs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestCreateRejectsBadInputAndChangesNothing(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
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
		{"disk larger than the filesystem", func(r *api.CreateInstanceRequest) { r.DiskSize = "2P" }, api.CodeInvalidArgument, "cannot fit"},
		{"ssh key garbage", func(r *api.CreateInstanceRequest) { r.SSHPublicKey = "ssh-rsa !!!" }, api.CodeInvalidArgument, "--ssh-key"},
		{"ssh key injection", func(r *api.CreateInstanceRequest) {
			r.SSHPublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\nruncmd: [reboot]"
		}, api.CodeInvalidArgument, "--ssh-key"},
		{"unknown vnet", func(r *api.CreateInstanceRequest) { r.VNet = "other" }, api.CodeInvalidArgument, "unknown vnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := daemontest.TinyReq("bob-dev")
			tt.mod(&req)
			_, err := td.Client.CreateInstance(context.Background(), req)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tt.code || !strings.Contains(ae.Message, tt.msg) {
				t.Fatalf("err = %v, want %s mentioning %q", err, tt.code, tt.msg)
			}
			list, _ := td.Client.Instances(context.Background())
			if len(list) != 0 {
				t.Fatalf("instances after refused create: %+v", list)
			}
			if dirs, _ := os.ReadDir(td.Paths.Instances()); len(dirs) != 0 {
				t.Fatalf("files after refused create: %v", dirs)
			}
			assertNoIPs(t, td)
		})
	}
}

func TestCreateFailureRollsBack(t *testing.T) {
	hv := daemontest.NewFakeHypervisor()
	hv.StartErr = errors.New("qemu: could not open backing file")
	td := daemontest.New(t, hv, nil)
	_, err := td.Create(t, daemontest.TinyReq("doomed"))
	if err == nil || !strings.Contains(err.Error(), "could not open backing file") {
		t.Fatalf("create error = %v", err)
	}
	inst, err := td.Client.Instance(context.Background(), "doomed")
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != api.StateCreateFailed || !strings.Contains(inst.StateReason, "backing file") {
		t.Fatalf("instance = %s %q", inst.State, inst.StateReason)
	}
	if _, err := os.Stat(td.Paths.Dir(inst.ID)); !os.IsNotExist(err) {
		t.Fatalf("instance dir left after failed create: %v", err)
	}
	assertNoIPs(t, td)
	op, err := td.Client.Delete(context.Background(), "doomed")
	if err == nil {
		op, err = td.Client.Wait(context.Background(), op.ID, nil)
	}
	if err != nil {
		t.Fatalf("delete of CreateFailed: %v", err)
	}
	// The rollback gave the address back: the delete has none to release
	// and must not show a step for it (it once read "invalid IP").
	var steps []string
	for _, st := range op.Stages {
		steps = append(steps, st.Step+" ("+st.Detail+")")
		if st.Step == lifecycle.StepRelease.ID || strings.Contains(st.Detail, "invalid") {
			t.Errorf("delete of a CreateFailed instance shows %s %q (%s)", st.Step, st.Name, st.Detail)
		}
	}
	if len(steps) == 0 {
		t.Errorf("delete recorded no steps at all")
	}
}

func TestOneOperationPerInstance(t *testing.T) {
	hv := daemontest.NewFakeHypervisor()
	hv.StartGate = make(chan struct{})
	td := daemontest.New(t, hv, nil)
	ctx := context.Background()
	op, err := td.Client.CreateInstance(ctx, daemontest.TinyReq("busy-one"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = td.Client.Delete(ctx, "busy-one")
	if !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), op.ID) {
		t.Fatalf("second operation: %v; want Conflict naming %s", err, op.ID)
	}
	close(hv.StartGate)
	if _, err := td.Client.Wait(ctx, op.ID, nil); err != nil {
		t.Fatal(err)
	}
}

// TestParallelCreatesGetDistinctAddresses: 20 creates at once all
// succeed, each with its own address.
func TestParallelCreatesGetDistinctAddresses(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := td.Create(t, daemontest.TinyReq(fmt.Sprintf("par-%02d", i)))
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
	list, _ := td.Client.Instances(context.Background())
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
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", td.Cfg.SocketPath)
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
	hv := daemontest.NewFakeHypervisor()
	td := daemontest.New(t, hv, func(tx *store.Tx) error {
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
	got, err := td.Client.Instance(ctx, "was-creating")
	if err != nil || got.State != api.StateCreateFailed {
		t.Fatalf("interrupted create: %+v %v", got, err)
	}
	if _, err := td.Client.Instance(ctx, "was-deleting"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("interrupted delete not finished: %v", err)
	}
	// Its disk is missing, so it is kept, marked Unknown, never dropped.
	got, err = td.Client.Instance(ctx, "was-running")
	if err != nil || got.State != api.StateUnknown || !strings.Contains(got.StateReason, "missing") {
		t.Fatalf("running without disk: %+v %v", got, err)
	}
}

func TestQuotaIsCheckedAtomically(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	if _, err := td.Client.SetQuota(t.Context(), "standardBSFamily", 1); err != nil {
		t.Fatal(err)
	}
	const n = 6
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			_, err := td.Client.CreateInstance(t.Context(), api.CreateInstanceRequest{Name: "q-" + string(rune('a'+i)) + "-dev", Size: "Standard_B1s", Image: "tiny"})
			errs <- err
		}(i)
	}
	okCount := 0
	for i := 0; i < n; i++ {
		err := <-errs
		switch {
		case err == nil:
			okCount++
		case !api.IsCode(err, api.CodeQuotaExceeded):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if okCount != 1 {
		t.Fatalf("%d creates succeeded against a limit with room for one", okCount)
	}
	if _, err := td.Client.SetQuota(t.Context(), "standardBSFamily", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := td.Client.SetQuota(t.Context(), "", 0); err != nil {
		t.Fatal(err)
	}
	q, _ := td.Client.Quota(t.Context())
	if q.Total.Used != 1 {
		t.Fatalf("total used = %d, want 1", q.Total.Used)
	}
	if _, err := td.Client.SetQuota(t.Context(), "nosuchFamily", 3); !api.IsCode(err, api.CodeInvalidArgument) {
		t.Fatalf("unknown family: %v", err)
	}
}

// TestHostGuards: a create or start the host cannot carry is refused with
// a clear error, and nothing is made or changed.
func TestHostGuards(t *testing.T) {
	ctx := context.Background()
	stopped := vm.Instance{ID: vm.NewID(), Name: "fits-dev", State: vm.StateStopped, VNet: "default",
		Size: vm.DefaultSizes()[0], Image: "tiny", CreatedAt: time.Now().UTC()}
	stopped.Domain = vm.DomainName(stopped.Name, stopped.ID)
	dir := t.TempDir()
	disk := lifecycle.Paths{DataDir: filepath.Join(dir, "data")}.Disk(stopped.ID)
	if err := os.MkdirAll(filepath.Dir(disk), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	td := daemontest.NewAt(t, dir, daemontest.NewFakeHypervisor(), func(cfg *daemon.Config) {
		cfg.MinFreeDisk = 1 << 62 // more than any disk has
	}, func(tx *store.Tx) error { return tx.CreateInstance(stopped) })
	if _, err := td.Client.CreateInstance(ctx, daemontest.TinyReq("full-dev")); !api.IsCode(err, api.CodeInsufficientResources) {
		t.Fatalf("create with the disk full: %v", err)
	}
	if _, err := td.Client.Start(ctx, "fits-dev"); !api.IsCode(err, api.CodeInsufficientResources) {
		t.Fatalf("start with the disk full: %v", err)
	}
	if _, err := td.Client.Instance(ctx, "full-dev"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("refused create left a record: %v", err)
	}
	entries, _ := os.ReadDir(td.Paths.Instances())
	if len(entries) != 1 {
		t.Fatalf("instance dirs after a refused create: %d, want 1", len(entries))
	}
	if inst, _ := td.Client.Instance(ctx, "fits-dev"); inst.State != api.StateStopped {
		t.Fatalf("refused start changed the state to %s", inst.State)
	}

	big := daemontest.NewWith(t, daemontest.NewFakeHypervisor(), func(cfg *daemon.Config) {
		cfg.Sizes = []vm.Size{{Name: "Huge_X1", Family: "hugeFamily", VCPUs: 1, MemoryMiB: 1 << 40}}
	}, nil)
	req := daemontest.TinyReq("huge-dev")
	req.Size = "Huge_X1"
	if _, err := big.Client.CreateInstance(ctx, req); !api.IsCode(err, api.CodeInsufficientResources) {
		t.Fatalf("a size bigger than the host's memory: %v", err)
	}
}

// TestLongCreateStream runs many creates at once (under -race in `make
// test`): every one ends Running with its own address, and a create that
// finishes before its handler answers is no crash (the snapshot is taken
// before the operation starts).
func TestLongCreateStream(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	const workers, each = 8, 25 // 200: most of the default /24
	errs := make(chan error, workers*each)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := td.Create(t, daemontest.TinyReq(fmt.Sprintf("s%d-%d", w, i)))
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	list, err := td.Client.Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, inst := range list {
		if inst.State != api.StateRunning || seen[inst.IP] {
			t.Fatalf("%s: %s at %s (duplicate address: %v)", inst.Name, inst.State, inst.IP, seen[inst.IP])
		}
		seen[inst.IP] = true
	}
	if len(list) != workers*each {
		t.Fatalf("%d instances, want %d", len(list), workers*each)
	}
}

// TestExecTimeoutIsBounded: a timeout that would overflow a duration (or
// run for years) is refused before anything runs in the guest.
func TestExecTimeoutIsBounded(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	if _, err := td.Create(t, daemontest.TinyReq("exec-dev")); err != nil {
		t.Fatal(err)
	}
	for _, secs := range []int{-1, 9223372037, 25 * 3600} {
		_, err := td.Client.Exec(context.Background(), "exec-dev", api.ExecRequest{Command: []string{"true"}, TimeoutSeconds: secs})
		if !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), "--timeout") {
			t.Errorf("exec with a %ds timeout: %v, want InvalidArgument naming --timeout", secs, err)
		}
	}
}

// slowShutdown holds each guest shutdown until the test releases it.
type slowShutdown struct {
	*daemontest.FakeHypervisor
	entered chan string
	release chan struct{}
}

func (s *slowShutdown) Shutdown(ctx context.Context, name string) error {
	s.entered <- name
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.FakeHypervisor.Shutdown(ctx, name)
}

// TestHostShutdownsAreSerialised: logind's early notice and
// labvm-guests.service's call may both ask for a host shutdown; the later
// one returns only once the first has stopped the instances, so systemd
// does not stop labvmd in the middle.
func TestHostShutdownsAreSerialised(t *testing.T) {
	hv := &slowShutdown{FakeHypervisor: daemontest.NewFakeHypervisor(), entered: make(chan string, 4), release: make(chan struct{})}
	td := daemontest.New(t, hv, nil)
	if _, err := td.Create(t, daemontest.TinyReq("guest")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, second := make(chan struct{}), make(chan struct{})
	go func() { td.HostShutdown(ctx); close(first) }()
	select {
	case <-hv.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first host shutdown never asked the guest to stop")
	}
	go func() { td.HostShutdown(ctx); close(second) }()
	select {
	case <-second:
		t.Fatal("the second host shutdown returned while the first was still stopping the guest")
	case <-time.After(200 * time.Millisecond):
	}
	close(hv.release)
	for _, done := range []chan struct{}{first, second} {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a host shutdown did not return")
		}
	}
	inst, err := td.Client.Instance(ctx, "guest")
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != api.StateStopped {
		t.Errorf("after the host shutdowns: %s, want Stopped", inst.State)
	}
	select {
	case name := <-hv.entered:
		t.Errorf("the second host shutdown stopped %s again", name)
	default:
	}
}
