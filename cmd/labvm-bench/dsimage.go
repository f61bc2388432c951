package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/network"
	"github.com/labvm/labvm/storage"
	"github.com/labvm/labvm/vm"
	"libvirt.org/go/libvirt"
)

// dsReport is the data-science image's first boot: labvm's create to
// Running (cloud-init finished, Jupyter listening) against the same image
// booted by a plain libvirt domain with an empty seed, to cloud-init's
// result, on the same run.
type dsReport struct {
	image, size   string
	create, plain time.Duration
	// breakdown: what the guest says about its first boot, through labvm exec.
	breakdown [][2]string
}

// dsFigures boots the data-science image once through labvm and once as a
// plain domain, one after the other (never both at once: on a small TCG
// host they would slow each other).
func (e *env) dsFigures() error {
	d, err := e.startDaemon("ds", 24, "--ready-timeout", "20m")
	if err != nil {
		return err
	}
	ctx := context.Background()
	e.logf("ds: importing %s", e.o.dsImage)
	op, err := d.c.ImportImageFile(ctx, api.ImportImageRequest{Name: "ds", Apps: []api.App{{Name: "jupyter", Port: 8888, Path: "/tree"}}}, e.o.dsImage)
	if err != nil {
		return err
	}
	if _, err := d.c.Wait(ctx, op.ID, nil); err != nil {
		return fmt.Errorf("import %s: %w", e.o.dsImage, err)
	}
	img, err := d.c.Image(ctx, "ds")
	if err != nil {
		return err
	}
	base := filepath.Join(d.dataDir, "images", img.Digest+".qcow2")
	rep := &dsReport{image: e.o.dsImage, size: e.o.dsSize}

	e.logf("ds: plain libvirt domain, empty seed, to cloud-init's result")
	if rep.plain, err = e.dsPlainBoot(d, base); err != nil {
		return err
	}
	e.logf("ds: plain boot %s", rep.plain.Round(time.Second))

	name := "lvbench-ds-" + e.id
	e.logf("ds: labvm create %s → Running", name)
	t0 := time.Now()
	if _, err := d.cli("create", name, "--image", "ds", "--size", e.o.dsSize); err != nil {
		return err
	}
	rep.create = time.Since(t0)
	e.logf("ds: create → Running %s", rep.create.Round(time.Second))
	for _, c := range [][]string{
		{"systemd-analyze"},
		{"cloud-init", "analyze", "blame"},
		{"sh", "-c", "systemd-analyze blame | head -n 15"},
		{"systemd-analyze", "critical-chain", "cloud-final.service"},
	} {
		out, err := d.cli(append([]string{"exec", name, "--"}, c...)...)
		if err != nil {
			out = "(failed: " + err.Error() + ")"
		}
		rep.breakdown = append(rep.breakdown, [2]string{strings.Join(c, " "), strings.TrimSpace(out)})
	}
	if err := e.deleteInstance(d, name); err != nil {
		return err
	}
	e.report.ds = rep
	d.stop()
	return nil
}

// dsPlainBoot boots base as a plain transient domain (the same domain XML
// labvm writes, so the same devices and SMBIOS) with an empty seed: only
// meta-data, `#cloud-config` and the static network-config (without it,
// ifupdown's DHCP timeout would dominate), made with genisoimage as an
// admin would. It returns the time until /run/cloud-init/result.json
// exists, read through the guest agent, labvm's own signal.
func (e *env) dsPlainBoot(d *daemonProc, base string) (time.Duration, error) {
	dir := filepath.Join(e.work, "ds-plain")
	name := "lvbench-" + e.id + "-ds-plain"
	e.onCleanup(func() { e.removeDomainNamed(name); _ = os.RemoveAll(dir) })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	id := vm.NewID()
	mac := network.MAC(id)
	gw := network.Gateway(d.subnet)
	addr := netip.PrefixFrom(gw.Next().Next().Next().Next(), d.subnet.Bits())
	spec := storage.SeedSpec{InstanceID: id, Hostname: "dsplain", MAC: mac, Address: addr, Gateway: gw}
	docs := map[string][]byte{
		"meta-data":      storage.MetaData(spec),
		"user-data":      []byte("#cloud-config\n"),
		"network-config": storage.NetworkConfig(spec),
	}
	for f, b := range docs {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return 0, err
		}
	}
	seed := filepath.Join(dir, "seed.iso")
	if out, err := exec.Command("genisoimage", "-quiet", "-output", seed, "-volid", "cidata", "-joliet", "-rock",
		filepath.Join(dir, "meta-data"), filepath.Join(dir, "user-data"), filepath.Join(dir, "network-config")).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("genisoimage: %v\n%s", err, out)
	}
	ctx := context.Background()
	t0 := time.Now()
	if err := storage.CreateOverlay(ctx, storage.OverlayOptions{
		Path: filepath.Join(dir, "disk.qcow2"), BackingFile: base, BackingFormat: "qcow2", Size: storage.DefaultDiskSize,
	}); err != nil {
		return 0, err
	}
	size := vm.Size{VCPUs: 2, MemoryMiB: 4096}
	for _, s := range vm.DefaultSizes() {
		if s.Name == e.o.dsSize {
			size = s
		}
	}
	xml, err := vm.DomainXML(vm.DomainSpec{
		Name: name, InstanceID: id, VCPUs: size.VCPUs, MemoryMiB: size.MemoryMiB,
		DiskPath: filepath.Join(dir, "disk.qcow2"), SeedPath: seed,
		Bridge: d.bridge, MAC: mac, PortName: network.PortName(id), ConsoleLog: filepath.Join(dir, "console.log"), Accel: vm.AccelTCG,
	})
	if err != nil {
		return 0, err
	}
	dom, err := e.lv.DomainCreateXML(xml, 0)
	if err != nil {
		return 0, fmt.Errorf("plain ds domain: %w", err)
	}
	defer dom.Free()
	deadline := time.Now().Add(20 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := dom.QemuAgentCommand(`{"execute":"guest-file-open","arguments":{"path":"/run/cloud-init/result.json","mode":"r"}}`,
			libvirt.DOMAIN_QEMU_AGENT_COMMAND_MIN, 0)
		if err == nil {
			took := time.Since(t0)
			var h struct {
				Return int `json:"return"`
			}
			if jsonErr := json.Unmarshal([]byte(out), &h); jsonErr == nil {
				_, _ = dom.QemuAgentCommand(fmt.Sprintf(`{"execute":"guest-file-close","arguments":{"handle":%d}}`, h.Return), libvirt.DOMAIN_QEMU_AGENT_COMMAND_MIN, 0)
			}
			_ = dom.Destroy()
			return took, nil
		}
		time.Sleep(time.Second)
	}
	_ = dom.Destroy()
	return 0, fmt.Errorf("plain ds domain: no cloud-init result after 20 minutes (console: %s)", filepath.Join(dir, "console.log"))
}

// markdown is the report's section for the data-science image.
func (r *dsReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## First boot of the data-science image\n\n")
	fmt.Fprintf(&b, "`%s`, size %s, TCG, one boot each, one after the other.\n\n", filepath.Base(r.image), r.size)
	b.WriteString("| | to | time |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| `labvm create` | Running: cloud-init finished, Jupyter listening as the user | %s |\n", r.create.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "| plain libvirt domain, empty seed | cloud-init's result.json (no user, no Jupyter) | %s |\n", r.plain.Round(100*time.Millisecond))
	if r.plain > 0 {
		fmt.Fprintf(&b, "| ratio | | **%.2f×** |\n", float64(r.create)/float64(r.plain))
	}
	b.WriteString("\nWhere labvm's first boot goes, from the guest (`labvm exec`):\n\n")
	for _, kv := range r.breakdown {
		fmt.Fprintf(&b, "`%s`:\n\n```\n%s\n```\n\n", kv[0], kv[1])
	}
	return b.String()
}
