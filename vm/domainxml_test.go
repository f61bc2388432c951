package vm

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

	"libvirt.org/go/libvirt"
)

const wantTCGXML = `<domain type="qemu">
  <name>labvm-alice-1234abcd</name>
  <metadata><labvm:instance xmlns:labvm="https://labvm.dev/xmlns/instance/1"><labvm:id>1234abcd5678ef90</labvm:id></labvm:instance></metadata>
  <memory unit="MiB">2048</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <boot dev="hd"></boot>
  </os>
  <features>
    <acpi></acpi>
    <apic></apic>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap"></driver>
      <source file="/var/lib/labvm/instances/1234abcd5678ef90/disk.qcow2"></source>
      <target dev="vda" bus="virtio"></target>
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"></driver>
      <source file="/var/lib/labvm/instances/1234abcd5678ef90/seed.iso"></source>
      <target dev="sda" bus="scsi"></target>
      <readonly></readonly>
    </disk>
    <controller type="scsi" model="virtio-scsi"></controller>
    <controller type="usb" model="none"></controller>
    <interface type="bridge">
      <mac address="52:54:00:12:34:56"></mac>
      <source bridge="labvm0"></source>
      <model type="virtio"></model>
    </interface>
    <serial type="pty">
      <target port="0"></target>
      <log file="/var/lib/labvm/instances/1234abcd5678ef90/console.log" append="on"></log>
    </serial>
    <console type="pty">
      <target type="serial" port="0"></target>
    </console>
    <channel type="unix">
      <target type="virtio" name="org.qemu.guest_agent.0"></target>
    </channel>
    <memballoon model="none"></memballoon>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
  </devices>
</domain>`

const wantKVMXML = `<domain type="kvm">
  <name>labvm-alice-1234abcd</name>
  <metadata><labvm:instance xmlns:labvm="https://labvm.dev/xmlns/instance/1"><labvm:id>1234abcd5678ef90</labvm:id></labvm:instance></metadata>
  <memory unit="MiB">2048</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <boot dev="hd"></boot>
  </os>
  <features>
    <acpi></acpi>
    <apic></apic>
  </features>
  <cpu mode="host-passthrough"></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap"></driver>
      <source file="/var/lib/labvm/instances/1234abcd5678ef90/disk.qcow2"></source>
      <target dev="vda" bus="virtio"></target>
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"></driver>
      <source file="/var/lib/labvm/instances/1234abcd5678ef90/seed.iso"></source>
      <target dev="sda" bus="scsi"></target>
      <readonly></readonly>
    </disk>
    <controller type="scsi" model="virtio-scsi"></controller>
    <controller type="usb" model="none"></controller>
    <interface type="bridge">
      <mac address="52:54:00:12:34:56"></mac>
      <source bridge="labvm0"></source>
      <model type="virtio"></model>
    </interface>
    <serial type="pty">
      <target port="0"></target>
      <log file="/var/lib/labvm/instances/1234abcd5678ef90/console.log" append="on"></log>
    </serial>
    <console type="pty">
      <target type="serial" port="0"></target>
    </console>
    <channel type="unix">
      <target type="virtio" name="org.qemu.guest_agent.0"></target>
    </channel>
    <memballoon model="none"></memballoon>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
  </devices>
</domain>`

func TestDomainXML(t *testing.T) {
	kvm := testSpec("labvm-alice-1234abcd", "1234abcd5678ef90", AccelKVM)
	kvm.Emulator = "/usr/bin/qemu-system-x86_64"
	tests := []struct {
		name string
		spec DomainSpec
		want string
	}{
		{"tcg", testSpec("labvm-alice-1234abcd", "1234abcd5678ef90", AccelTCG), wantTCGXML},
		{"kvm with emulator", kvm, wantKVMXML},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DomainXML(tt.spec)
			if err != nil {
				t.Fatalf("DomainXML: %v", err)
			}
			if got != tt.want {
				t.Errorf("DomainXML mismatch\n got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestDomainXMLEscapesInstanceID(t *testing.T) {
	got, err := DomainXML(testSpec("labvm-x", `a<b&"c`, AccelTCG))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "<labvm:id>a&lt;b&amp;&#34;c</labvm:id>") {
		t.Errorf("instance id not escaped in:\n%s", got)
	}
}

func TestDomainXMLRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*DomainSpec)
		want   string
	}{
		{"empty name", func(s *DomainSpec) { s.Name = "" }, "empty name"},
		{"empty id", func(s *DomainSpec) { s.InstanceID = "" }, "empty instance id"},
		{"zero vcpus", func(s *DomainSpec) { s.VCPUs = 0 }, "vcpus 0"},
		{"tiny memory", func(s *DomainSpec) { s.MemoryMiB = 63 }, "memory 63 MiB"},
		{"relative disk", func(s *DomainSpec) { s.DiskPath = "disk.qcow2" }, "disk path"},
		{"relative seed", func(s *DomainSpec) { s.SeedPath = "../seed.iso" }, "seed path"},
		{"empty console log", func(s *DomainSpec) { s.ConsoleLog = "" }, "console log path"},
		{"relative emulator", func(s *DomainSpec) { s.Emulator = "qemu-system-x86_64" }, "emulator"},
		{"no bridge", func(s *DomainSpec) { s.Bridge = "" }, "empty bridge"},
		{"bad mac", func(s *DomainSpec) { s.MAC = "52:54:00:12:34" }, "mac"},
		{"eui64 mac", func(s *DomainSpec) { s.MAC = "52:54:00:12:34:56:78:9a" }, "mac"},
		{"bad accel", func(s *DomainSpec) { s.Accel = Accel(9) }, "accel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec("labvm-bad", "0123456789abcdef", AccelTCG)
			tt.mutate(&spec)
			_, err := DomainXML(spec)
			if !errors.Is(err, ErrInvalidDomainSpec) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("DomainXML = %v, want ErrInvalidDomainSpec mentioning %q", err, tt.want)
			}
		})
	}
}

func TestDomainXMLAcceptedByTestDriver(t *testing.T) {
	l := newTestDriver(t)
	for _, accel := range []Accel{AccelTCG, AccelKVM} {
		spec := testSpec("labvm-accept-"+accel.String(), "ffff0000"+accel.String(), accel)
		startTestDomain(t, l, spec)
		if st, err := l.DomainState(t.Context(), spec.Name); err != nil || st != DomainRunning {
			t.Errorf("%v domain state = %v, %v; want running", accel, st, err)
		}
	}
}

// TestDomainXMLAcceptedByQEMU has the real QEMU driver translate the XML
// into a command line, which checks every device against this QEMU's
// capabilities without booting anything.
func TestDomainXMLAcceptedByQEMU(t *testing.T) {
	l := newSystem(t)
	x, err := DomainXML(testSpec("labvm-native-00001111", "0000111122223333", AccelTCG))
	if err != nil {
		t.Fatal(err)
	}
	var argv string
	err = l.do(t.Context(), func(c *libvirt.Connect) error {
		argv, err = c.DomainXMLToNative("qemu-argv", x, 0)
		return err
	})
	if err != nil {
		t.Fatalf("DomainXMLToNative: %v", err)
	}
	for _, want := range []string{"-accel tcg", `"driver":"virtio-scsi-pci"`, `"driver":"scsi-cd"`, "logappend=on", "usb=off", "org.qemu.guest_agent.0"} {
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

	spec := DomainSpec{
		Name:       "labvm-boot-" + fmt.Sprint(os.Getpid()),
		InstanceID: "b007b007" + fmt.Sprint(os.Getpid()),
		VCPUs:      1,
		MemoryMiB:  128,
		DiskPath:   filepath.Join(dir, "disk.qcow2"),
		SeedPath:   filepath.Join(dir, "seed.iso"),
		Bridge:     bridge,
		MAC:        "52:54:00:fe:00:01",
		ConsoleLog: filepath.Join(dir, "console.log"),
		Accel:      AccelTCG,
	}
	startTestDomain(t, l, spec)

	if st, err := l.DomainState(ctx, spec.Name); err != nil || st != DomainRunning {
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
	if err := l.AgentPing(ctx, spec.Name); !errors.Is(err, ErrAgentUnavailable) {
		t.Errorf("AgentPing without a guest OS = %v, want ErrAgentUnavailable", err)
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
