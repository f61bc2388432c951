package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
	"libvirt.org/go/libvirt"
)

const stageWaiting = "Waiting for the guest"

// qemuFigures are the figures on the real libvirtd and QEMU (TCG).
func (e *env) qemuFigures() error {
	d, err := e.startDaemon("qemu", 24)
	if err != nil {
		return err
	}
	base, err := d.importImage(e.image)
	if err != nil {
		return err
	}
	r := e.report
	r.qemu = true

	// Figures 1, 4 and 6: control-plane creates interleaved with floor
	// runs, so drift on the host hits both alike.
	e.logf("control plane: %d labvm creates interleaved with %d floor runs", e.o.creates, e.o.creates)
	for i := 0; i < e.o.creates; i++ {
		if err := e.controlPlaneCreate(d, i); err != nil {
			return err
		}
		if err := e.floorRun(d, base, i); err != nil {
			return err
		}
		if err := e.bareRun(i); err != nil {
			return err
		}
	}

	// Figure 3: whole commands, labvm create --no-wait vs virt-install.
	if _, err := exec.LookPath("virt-install"); err != nil {
		r.notes = append(r.notes, "virt-install not installed: the comparison was skipped (`apt-get install virtinst`)")
	} else {
		e.logf("labvm create vs virt-install: %d pairs", e.o.pairs)
		for i := 0; i < e.o.pairs; i++ {
			if err := e.labvmCommandRun(d, i); err != nil {
				return err
			}
			if err := e.virtInstallRun(d, base, i); err != nil {
				return err
			}
		}
	}

	// Figure 2: the lifecycle with a guest that really boots.
	e.logf("lifecycle: %d create/stop/start/delete cycles with a booting guest", e.o.lifecycle)
	for i := 0; i < e.o.lifecycle; i++ {
		if err := e.lifecycleRun(d, i); err != nil {
			return err
		}
	}
	d.stop()
	return nil
}

// diskBytes is the host space taken by an instance's disk and seed.
func diskBytes(dir string) int64 {
	var n int64
	for _, f := range []string{"disk.qcow2", "seed.iso"} {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(dir, f), &st) == nil {
			n += st.Blocks * 512
		}
	}
	return n
}

func stageOf(op api.Operation, name string) *api.Stage {
	for i := range op.Stages {
		if op.Stages[i].Name == name {
			return &op.Stages[i]
		}
	}
	return nil
}

// controlPlaneCreate times one create through the API from the call to the
// domain running (the operation reaching "Waiting for the guest"), then
// tears the instance down without waiting for the guest.
func (e *env) controlPlaneCreate(d *daemonProc, i int) error {
	r := e.report
	ctx := context.Background()
	name := fmt.Sprintf("lvbench-c%02d", i)
	t0 := time.Now()
	op, err := d.c.CreateInstance(ctx, api.CreateInstanceRequest{Name: name, Size: e.o.size, Image: "tiny"})
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	accepted := time.Since(t0)
	wctx, cancel := context.WithCancel(ctx)
	var running time.Duration
	var last api.Operation
	_, werr := d.c.Wait(wctx, op.ID, func(o api.Operation) {
		last = o
		if running == 0 && stageOf(o, stageWaiting) != nil {
			running = time.Since(t0)
			cancel()
		}
	})
	cancel()
	if running == 0 {
		return fmt.Errorf("create %s never reached %q: %v (op %+v)", name, stageWaiting, werr, last)
	}
	r.cpCreate.add(running)
	r.cpAccepted.add(accepted)
	// Server-side stages: where the time goes.
	for _, st := range last.Stages {
		if st.Name == stageWaiting {
			continue
		}
		end := stageOf(last, stageWaiting).StartedAt
		if st.DoneAt != nil {
			end = *st.DoneAt
		}
		r.stage(st.Name).add(end.Sub(st.StartedAt))
	}
	inst, err := d.c.Instance(ctx, name)
	if err != nil {
		return err
	}
	r.freshDisk = append(r.freshDisk, diskBytes(filepath.Join(d.dataDir, "instances", inst.ID)))
	return e.teardown(d, name, inst.Domain)
}

// teardown destroys the domain under the daemon (the guest never gets to
// compete with the next measurement), waits for the create to settle as
// SetupFailed, and deletes the instance.
func (e *env) teardown(d *daemonProc, name, domain string) error {
	ctx := context.Background()
	if dom, err := e.lv.LookupDomainByName(domain); err == nil {
		_ = dom.Destroy()
		dom.Free()
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		inst, err := d.c.Instance(ctx, name)
		if err != nil {
			return err
		}
		st, _ := vm.ParseState(string(inst.State))
		if !st.Transitional() && !strings.Contains(inst.StateReason, "(operation ") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still %s after 2m", name, inst.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return e.deleteInstance(d, name)
}

func (e *env) deleteInstance(d *daemonProc, name string) error {
	ctx := context.Background()
	op, err := d.c.Delete(ctx, name)
	if err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	_, err = d.c.Wait(ctx, op.ID, nil)
	return err
}

// floorRun does what a create cannot avoid, in-process with labvm's own
// functions: the overlay, the seed, and starting the same domain XML.
func (e *env) floorRun(d *daemonProc, base string, i int) error {
	r := e.report
	ctx := context.Background()
	dir := filepath.Join(e.work, "floor", fmt.Sprint(i))
	name := fmt.Sprintf("lvbench-%s-floor-%02d", e.id, i)
	e.onCleanup(func() { e.removeDomainNamed(name); _ = os.RemoveAll(dir) })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	id := vm.NewID()
	mac := network.MAC(id)
	gw := network.Gateway(d.subnet)
	addr := netip.PrefixFrom(gw.Next().Next().Next(), d.subnet.Bits())

	t0 := time.Now()
	if err := storage.CreateOverlay(ctx, storage.OverlayOptions{
		Path: filepath.Join(dir, "disk.qcow2"), BackingFile: base, BackingFormat: "qcow2", Size: storage.DefaultDiskSize,
	}); err != nil {
		return err
	}
	t1 := time.Now()
	if err := storage.WriteSeed(ctx, filepath.Join(dir, "seed.iso"), storage.SeedSpec{
		InstanceID: id, Hostname: name[len(name)-8:], MAC: mac, Address: addr, Gateway: gw,
	}); err != nil {
		return err
	}
	t2 := time.Now()
	size := e.sizeSpec()
	xml, err := vm.DomainXML(vm.DomainSpec{
		Name: name, InstanceID: id, VCPUs: size.VCPUs, MemoryMiB: size.MemoryMiB,
		DiskPath: filepath.Join(dir, "disk.qcow2"), SeedPath: filepath.Join(dir, "seed.iso"),
		Bridge: d.bridge, MAC: mac, PortName: network.PortName(id), ConsoleLog: filepath.Join(dir, "console.log"), Accel: vm.AccelTCG,
	})
	if err != nil {
		return err
	}
	dom, err := e.lv.DomainCreateXML(xml, 0)
	if err != nil {
		return fmt.Errorf("floor: start %s: %w", name, err)
	}
	t3 := time.Now()
	r.floor.add(t3.Sub(t0))
	r.floorDisk.add(t1.Sub(t0))
	r.floorSeed.add(t2.Sub(t1))
	r.floorStart.add(t3.Sub(t2))
	_ = dom.Destroy()
	dom.Free()
	return os.RemoveAll(dir)
}

// bareRun starts the barest q35 TCG domain (no disk, no NIC, no
// console): what libvirt and QEMU take with nothing to set up, a bound
// under any tool's create.
func (e *env) bareRun(i int) error {
	size := e.sizeSpec()
	name := fmt.Sprintf("lvbench-%s-bare-%02d", e.id, i)
	e.onCleanup(func() { e.removeDomainNamed(name) })
	xml := fmt.Sprintf(`<domain type="qemu"><name>%s</name><memory unit="MiB">%d</memory><vcpu>%d</vcpu>`+
		`<os><type arch="x86_64" machine="q35">hvm</type></os>`+
		`<devices><controller type="usb" model="none"/><memballoon model="none"/></devices></domain>`, name, size.MemoryMiB, size.VCPUs)
	t0 := time.Now()
	dom, err := e.lv.DomainCreateXML(xml, 0)
	if err != nil {
		return fmt.Errorf("bare domain: %w", err)
	}
	e.report.bare.add(time.Since(t0))
	_ = dom.Destroy()
	dom.Free()
	return nil
}

func (e *env) sizeSpec() vm.Size {
	for _, s := range vm.DefaultSizes() {
		if s.Name == e.o.size {
			return s
		}
	}
	return vm.Size{VCPUs: 1, MemoryMiB: 1024}
}

// pollRunning reports, on the returned channel, how long after t0 a
// running domain whose name matches appeared. Both sides of the
// virt-install comparison are observed the same way.
func (e *env) pollRunning(ctx context.Context, t0 time.Time, match func(string) bool) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			doms, err := e.lv.ListAllDomains(libvirt.CONNECT_LIST_DOMAINS_RUNNING)
			seen := false
			for _, dom := range doms {
				if n, _ := dom.GetName(); err == nil && match(n) {
					seen = true
				}
				dom.Free()
			}
			if seen {
				out <- time.Since(t0)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return out
}

// labvmCommandRun times `labvm create --no-wait` as a whole command, to
// the domain running.
func (e *env) labvmCommandRun(d *daemonProc, i int) error {
	r := e.report
	name := fmt.Sprintf("lvbench-v%02d", i)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	seen := e.pollRunning(ctx, t0, func(n string) bool { return strings.HasPrefix(n, "labvm-"+name+"-") })
	if _, err := d.cli("create", name, "--size", e.o.size, "--image", "tiny", "--no-wait"); err != nil {
		return err
	}
	exit := time.Since(t0)
	running, ok := <-seen
	if !ok {
		return fmt.Errorf("%s: no running domain within 2m", name)
	}
	r.cmdLabvm.add(running)
	r.cmdLabvmExit.add(exit)
	inst, err := d.c.Instance(context.Background(), name)
	if err != nil {
		return err
	}
	return e.teardown(d, name, inst.Domain)
}

// virtInstallRun times the same create done with Debian's tools: a
// qemu-img overlay of the same size on the same base, the same cloud-init
// documents handed to virt-install --cloud-init, the same vCPUs, memory,
// machine and bridge.
func (e *env) virtInstallRun(d *daemonProc, base string, i int) error {
	r := e.report
	dir := filepath.Join(e.work, "vi", fmt.Sprint(i))
	name := fmt.Sprintf("lvbench-%s-vi-%02d", e.id, i)
	e.onCleanup(func() { e.removeDomainNamed(name); _ = os.RemoveAll(dir) })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	id := vm.NewID()
	gw := network.Gateway(d.subnet)
	spec := storage.SeedSpec{
		InstanceID: id, Hostname: fmt.Sprintf("vi%02d", i), MAC: network.MAC(id),
		Address: netip.PrefixFrom(gw.Next().Next().Next().Next(), d.subnet.Bits()), Gateway: gw,
	}
	size := e.sizeSpec()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	disk := filepath.Join(dir, "disk.qcow2")

	t0 := time.Now()
	seen := e.pollRunning(ctx, t0, func(n string) bool { return n == name })
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, disk, "120G").CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	userData, err := storage.UserData(spec)
	if err != nil {
		return err
	}
	docs := map[string][]byte{"user-data": userData, "meta-data": storage.MetaData(spec), "network-config": storage.NetworkConfig(spec)}
	for f, b := range docs {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return err
		}
	}
	args := []string{
		"--connect", "qemu:///system", "--name", name,
		"--virt-type", "qemu", "--machine", "q35",
		"--memory", fmt.Sprint(size.MemoryMiB), "--vcpus", fmt.Sprint(size.VCPUs),
		"--import", "--disk", "path=" + disk + ",format=qcow2,bus=virtio",
		"--cloud-init", fmt.Sprintf("user-data=%s,meta-data=%s,network-config=%s",
			filepath.Join(dir, "user-data"), filepath.Join(dir, "meta-data"), filepath.Join(dir, "network-config")),
		"--network", "bridge=" + d.bridge + ",mac=" + spec.MAC + ",model=virtio",
		"--graphics", "none", "--noautoconsole", "--osinfo", "detect=on,require=off",
	}
	vi := exec.CommandContext(ctx, "virt-install", args...)
	vi.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := vi.CombinedOutput(); err != nil {
		return fmt.Errorf("virt-install: %v: %s", err, out)
	}
	exit := time.Since(t0)
	running, ok := <-seen
	if !ok {
		return fmt.Errorf("%s: no running domain within 2m", name)
	}
	r.cmdVirtInstall.add(running)
	r.cmdVirtInstallExit.add(exit)
	e.removeDomainNamed(name)
	return os.RemoveAll(dir)
}

func (e *env) removeDomainNamed(name string) {
	dom, err := e.lv.LookupDomainByName(name)
	if err != nil {
		return
	}
	defer dom.Free()
	xml, _ := dom.GetXMLDesc(0)
	e.removeDomain(dom, xml)
}

// lifecycleRun is one instance's life with a guest that really boots, each
// step a whole `labvm` command that waits for its operation.
func (e *env) lifecycleRun(d *daemonProc, i int) error {
	r := e.report
	name := fmt.Sprintf("lvbench-l%02d", i)
	steps := []struct {
		s    *sample
		args []string
	}{
		{&r.lcCreate, []string{"create", name, "--size", e.o.size, "--image", "tiny"}},
		{nil, nil}, // disk after boot
		{&r.lcStop, []string{"stop", name}},
		{&r.lcStart, []string{"start", name}},
		{&r.lcDelete, []string{"delete", name, "--yes"}},
	}
	for _, st := range steps {
		if st.s == nil {
			inst, err := d.c.Instance(context.Background(), name)
			if err != nil {
				return err
			}
			if inst.State != api.StateRunning {
				return fmt.Errorf("%s is %s after create, want Running", name, inst.State)
			}
			r.bootedDisk = append(r.bootedDisk, diskBytes(filepath.Join(d.dataDir, "instances", inst.ID)))
			continue
		}
		took, err := d.timedCLI(st.args...)
		if err != nil {
			return errors.Join(err, fmt.Errorf("labvmd log:\n%s", d.logTail()))
		}
		st.s.add(took)
	}
	return nil
}
