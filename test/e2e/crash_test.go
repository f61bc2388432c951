package e2e

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/store"
)

// TestCrashAtEveryStep kills labvmd with SIGKILL at every stage boundary of
// create, start, stop, restart and delete (through the test-only
// LABVM_CRASH_AT hook), starts it again and checks that reconcile left
// nothing behind: no domain without an instance, no instance in a
// transitional state, no directory without a record, no record without
// its disk, addresses and quota in agreement, and doctor finding nothing.
//
// One daemon data dir runs the whole table in order, each step starting
// from the state the previous ones left, so only a few guests ever boot.
func TestCrashAtEveryStep(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image, "--sha256", readSHA256(t, image))

	create := func(name string) []string {
		return []string{"create", name, "--image", "tiny", "--size", "Standard_B1s"}
	}
	del := func(name string) []string { return []string{"delete", name, "--yes"} }
	steps := []struct {
		at   string            // LABVM_CRASH_AT
		prep []string          // run first, with no crash point armed
		cmd  []string          // the command the crash interrupts
		name string            // its instance
		want api.InstanceState // its state once reconciled; "" means deleted
	}{
		{at: "create/disk", cmd: create("cf-1"), name: "cf-1", want: api.StateCreateFailed},
		{at: "create/disk/after", cmd: create("cf-2"), name: "cf-2", want: api.StateCreateFailed},
		{at: "create/seed", cmd: create("cf-3"), name: "cf-3", want: api.StateCreateFailed},
		{at: "create/seed/after", cmd: create("cf-4"), name: "cf-4", want: api.StateCreateFailed},
		{at: "create/boot", cmd: create("cf-5"), name: "cf-5", want: api.StateCreateFailed},
		// The domain runs and SettingUp is recorded: reconcile waits again.
		{at: "create/boot/after", cmd: create("vm-c"), name: "vm-c", want: api.StateRunning},
		{at: "create/wait-guest", cmd: create("vm-a"), name: "vm-a", want: api.StateRunning},
		{at: "create/wait-guest/after", cmd: create("vm-b"), name: "vm-b", want: api.StateRunning},
		{at: "delete/destroy", cmd: del("vm-b"), name: "vm-b"},
		{at: "delete/destroy/after", cmd: del("vm-c"), name: "vm-c"},
		{at: "delete/remove-files", cmd: del("cf-1"), name: "cf-1"},
		{at: "delete/remove-files/after", cmd: del("cf-2"), name: "cf-2"},
		// A failed create gave its address back when it rolled back, so
		// its delete has no address step: these take instances that hold one.
		{at: "delete/release-address", prep: create("vm-d"), cmd: del("vm-d"), name: "vm-d"},
		{at: "delete/release-address/after", prep: create("vm-e"), cmd: del("vm-e"), name: "vm-e"},
		// Deleting a failed create needs no crash point of its own: it
		// must leave nothing behind all the same.
		{at: "delete/remove-files", cmd: del("cf-3"), name: "cf-3"},
		{at: "stop/shutdown", cmd: []string{"stop", "vm-a"}, name: "vm-a", want: api.StateStopped},
		{at: "start/boot", cmd: []string{"start", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "stop/shutdown/after", cmd: []string{"stop", "vm-a"}, name: "vm-a", want: api.StateStopped},
		{at: "start/boot/after", cmd: []string{"start", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "restart/shutdown", cmd: []string{"restart", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "restart/shutdown/after", cmd: []string{"restart", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "restart/boot", cmd: []string{"restart", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "restart/boot/after", cmd: []string{"restart", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "restart/wait-guest", cmd: []string{"restart", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "restart/wait-guest/after", cmd: []string{"restart", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "start/wait-guest", prep: []string{"stop", "vm-a"}, cmd: []string{"start", "vm-a"}, name: "vm-a", want: api.StateRunning},
		{at: "start/wait-guest/after", prep: []string{"stop", "vm-a"}, cmd: []string{"start", "vm-a"}, name: "vm-a", want: api.StateRunning},
	}
	began := time.Now()
	for _, st := range steps {
		if t.Failed() {
			break // later steps build on this one's state
		}
		if st.prep != nil {
			d.must(st.prep...)
		}
		d.crashDuring(st.at, st.cmd)
		list := d.waitStable()
		var got api.InstanceState
		if i := slices.IndexFunc(list, func(in api.Instance) bool { return in.Name == st.name }); i >= 0 {
			got = list[i].State
		}
		if got != st.want {
			t.Errorf("after a crash at %q: %s is %q, want %q", st.at, st.name, got, st.want)
		}
		d.checkInvariants(st.at, list)
		t.Logf("%-40s → %-12s (%s)", st.at, orGone(got), time.Since(began).Round(time.Second))
	}

	t.Log("the store's address allocations are exactly the instances' addresses")
	list := d.waitStable()
	d.stop()
	st, err := store.Open(filepath.Join(d.dataDir, "labvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	want := map[string]string{}
	for _, in := range list {
		if in.IP != "" {
			want[in.IP] = in.ID
		}
	}
	if err := st.View(func(tx *store.Tx) error {
		allocs, err := tx.AllIPAllocations()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, a := range allocs {
			got[a.IP.String()] = a.InstanceID
		}
		if !maps.Equal(got, want) {
			t.Errorf("IP allocations = %v, want the instances' %v", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// crashDuring arms the crash point, runs cmd until labvmd kills itself
// there, and starts labvmd again without it.
func (d *labvmd) crashDuring(at string, cmd []string) {
	d.t.Helper()
	d.stop()
	d.env = []string{"LABVM_CRASH_AT=" + at}
	d.start()
	d.env = nil
	if r := d.labvm(cmd...); r.code == 0 {
		d.t.Fatalf("labvm %s succeeded although labvmd should have crashed at %q", strings.Join(cmd, " "), at)
	}
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("labvmd still running 30s after the command failed; crash point %q not reached", at)
	}
	d.cmd = nil
	if !strings.Contains(d.logs.String(), "LABVM_CRASH_AT="+at+" reached") {
		d.t.Fatalf("labvmd died, but not at %q:\n%s", at, d.logs)
	}
	d.start()
}

var stableStates = []api.InstanceState{api.StateRunning, api.StateStopped, api.StateCreateFailed, api.StateSetupFailed, api.StateUnknown}

// waitStable waits for the operations reconcile resumed to end and
// returns the instances.
func (d *labvmd) waitStable() []api.Instance {
	d.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var list []api.Instance
		d.jsonOut(&list, "list")
		if !slices.ContainsFunc(list, func(in api.Instance) bool { return !slices.Contains(stableStates, in.State) }) {
			return list
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("instances not stable 3 minutes after restart: %+v", list)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkInvariants checks point 3 of the crash-safety issue through the
// API, virsh and the data dir.
func (d *labvmd) checkInvariants(at string, list []api.Instance) {
	d.t.Helper()
	fail := func(format string, args ...any) {
		d.t.Helper()
		d.t.Errorf("after a crash at %q: "+format, append([]any{at}, args...)...)
	}
	byDomain, byID := map[string]api.Instance{}, map[string]api.Instance{}
	ips, cores := map[string]string{}, 0
	for _, in := range list {
		byDomain[in.Domain], byID[in.ID] = in, in
		cores += in.Size.VCPUs
		if in.State == api.StateUnknown && in.StateReason == "" {
			fail("%s is Unknown with no reason", in.Name)
		}
		disk := filepath.Join(d.dataDir, "instances", in.ID, "disk.qcow2")
		if _, err := os.Stat(disk); err != nil && (in.State == api.StateRunning || in.State == api.StateStopped) {
			fail("%s is %s without its disk: %v", in.Name, in.State, err)
		}
		if in.IP == "" {
			continue
		}
		if other, dup := ips[in.IP]; dup {
			fail("%s and %s both hold %s", in.Name, other, in.IP)
		}
		ips[in.IP] = in.Name
		if in.State == api.StateCreateFailed {
			fail("%s is CreateFailed but still holds %s", in.Name, in.IP)
		}
	}
	doms := d.domains()
	for _, dom := range doms {
		if in, ok := byDomain[dom]; !ok || in.State == api.StateStopped || in.State == api.StateCreateFailed {
			fail("domain %s runs for no running instance (%+v)", dom, in.State)
		}
	}
	for _, in := range list {
		if in.State == api.StateRunning && !slices.Contains(doms, in.Domain) {
			fail("%s is Running without a domain (domains: %v)", in.Name, doms)
		}
	}
	for _, dir := range d.instanceDirs() {
		if _, ok := byID[filepath.Base(dir)]; !ok {
			fail("%s has no record", dir)
		}
	}
	var vnet api.VNet
	d.jsonOut(&vnet, "network", "show", "default")
	for _, a := range vnet.Addresses {
		if ips[a.IP] != a.Instance {
			fail("network lists %s for %s, the instances say %q", a.IP, a.Instance, ips[a.IP])
		}
	}
	var q api.Quota
	d.jsonOut(&q, "quota")
	if q.Total.Used != cores {
		fail("quota counts %d cores used, the instances hold %d", q.Total.Used, cores)
	}
	var rep api.DoctorReport
	d.jsonOut(&rep, "doctor")
	if len(rep.Findings) != 0 {
		fail("doctor finds %+v", rep.Findings)
	}
}

func orGone(s api.InstanceState) api.InstanceState {
	if s == "" {
		return "(deleted)"
	}
	return s
}
