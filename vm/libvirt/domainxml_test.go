package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
	virt "libvirt.org/go/libvirt"
)

func TestDomainXMLAcceptedByTestDriver(t *testing.T) {
	l := newTestDriver(t)
	for _, accel := range []vm.Accel{vm.AccelTCG, vm.AccelKVM} {
		spec := testSpec("labvm-accept-"+accel.String(), "ffff0000"+accel.String(), accel)
		spec.PortName = "lvpffff0000" + accel.String()
		startTestDomain(t, l, spec)
		if st, err := l.DomainState(t.Context(), spec.Name); err != nil || st != vm.DomainRunning {
			t.Errorf("%v domain state = %v, %v; want running", accel, st, err)
		}
	}
}

// TestDomainXMLAcceptedByQEMU has the real QEMU driver translate the XML
// into a command line, which checks every device against this QEMU's
// capabilities without booting anything.
func TestDomainXMLAcceptedByQEMU(t *testing.T) {
	l := newSystem(t)
	x, err := vm.DomainXML(testSpec("labvm-native-00001111", "0000111122223333", vm.AccelTCG))
	if err != nil {
		t.Fatal(err)
	}
	var argv string
	err = l.do(t.Context(), func(c *virt.Connect) error {
		argv, err = c.DomainXMLToNative("qemu-argv", x, 0)
		return err
	})
	if err != nil {
		t.Fatalf("DomainXMLToNative: %v", err)
	}
	for _, want := range []string{"-accel tcg", `"driver":"virtio-scsi-pci"`, `"driver":"scsi-cd"`, "logappend=on", "usb=off", "org.qemu.guest_agent.0",
		// cloud-init's datasource hint, so it does not probe other clouds
		"-smbios type=1,serial=ds=nocloud"} {
		if !strings.Contains(argv, want) {
			t.Errorf("qemu command line lacks %s:\n%s", want, argv)
		}
	}
	if strings.Contains(argv, "ide-cd") || strings.Contains(argv, "ahci") {
		t.Errorf("seed ended up on SATA/IDE, which cloud images cannot read:\n%s", argv)
	}
}

// TestBootUnderTCG boots the generated XML in real QEMU. There is no OS on
// the blank disk, so it covers everything up to the firmware: the domain
// runs, is found as ours, has no agent, and stops.
func TestBootUnderTCG(t *testing.T) {
	l := newSystem(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// Not t.TempDir: its parent is private to root, and QEMU runs as
	// libvirt-qemu, which must reach the disk.
	dir, err := os.MkdirTemp("", "labvm-boot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bridge := fmt.Sprintf("lvt%d", os.Getpid()%100000)
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("ip", "link", "add", bridge, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", bridge).Run() })
	run("qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "disk.qcow2"), "64M")
	if err := os.WriteFile(filepath.Join(dir, "seed.iso"), make([]byte, 64*1024), 0o644); err != nil {
		t.Fatal(err)
	}

	spec := vm.DomainSpec{
		Name:       "labvm-boot-" + fmt.Sprint(os.Getpid()),
		InstanceID: "b007b007" + fmt.Sprint(os.Getpid()),
		VCPUs:      1,
		MemoryMiB:  128,
		DiskPath:   filepath.Join(dir, "disk.qcow2"),
		SeedPath:   filepath.Join(dir, "seed.iso"),
		Bridge:     bridge,
		MAC:        "52:54:00:fe:00:01",
		PortName:   fmt.Sprintf("lvptest%d", os.Getpid()%100000),
		ConsoleLog: filepath.Join(dir, "console.log"),
		Accel:      vm.AccelTCG,
	}
	startTestDomain(t, l, spec)

	// libvirt made the tap under the name asked for, on the bridge: the
	// name the firewall's port rules match.
	link, err := exec.CommandContext(ctx, "ip", "-o", "link", "show", "dev", spec.PortName).CombinedOutput()
	if err != nil || !strings.Contains(string(link), "master "+bridge+" ") {
		t.Errorf("tap %s: %v: %s; want it enslaved to %s", spec.PortName, err, link, bridge)
	}

	if st, err := l.DomainState(ctx, spec.Name); err != nil || st != vm.DomainRunning {
		t.Fatalf("state = %v, %v; want running", st, err)
	}
	owned, err := l.OwnedDomains(ctx)
	if err != nil {
		t.Fatalf("OwnedDomains: %v", err)
	}
	found := false
	for _, d := range owned {
		found = found || d.Name == spec.Name && d.InstanceID == spec.InstanceID
	}
	if !found {
		t.Errorf("OwnedDomains = %+v, want %s with id %s", owned, spec.Name, spec.InstanceID)
	}
	checkRealDomainStats(t, l, spec)
	if err := l.AgentPing(ctx, spec.Name); !errors.Is(err, vm.ErrAgentUnavailable) {
		t.Errorf("AgentPing without a guest OS = %v, want vm.ErrAgentUnavailable", err)
	}
	// Firmware ignores the power button, so this only checks the request
	// is accepted; the domain is then destroyed as the daemon would.
	if err := l.Shutdown(ctx, spec.Name); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := l.Destroy(ctx, spec.Name); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := l.WaitGone(ctx, spec.Name); err != nil {
		t.Fatalf("WaitGone: %v", err)
	}
	if _, err := os.Stat(spec.ConsoleLog); err != nil {
		t.Errorf("console log not created: %v", err)
	}
}
