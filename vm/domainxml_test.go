package vm

import (
	"errors"
	"strings"
	"testing"
)

const wantTCGXML = `<domain type="qemu">
  <name>labvm-alice-1234abcd</name>
  <metadata><labvm:instance xmlns:labvm="https://labvm.dev/xmlns/instance/1"><labvm:id>1234abcd5678ef90</labvm:id></labvm:instance></metadata>
  <memory unit="MiB">2048</memory>
  <vcpu>2</vcpu>
  <sysinfo type="smbios">
    <system>
      <entry name="serial">ds=nocloud</entry>
    </system>
  </sysinfo>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <boot dev="hd"></boot>
    <smbios mode="sysinfo"></smbios>
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
  <sysinfo type="smbios">
    <system>
      <entry name="serial">ds=nocloud</entry>
    </system>
  </sysinfo>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <boot dev="hd"></boot>
    <smbios mode="sysinfo"></smbios>
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

func TestDomainXMLPortName(t *testing.T) {
	const nic = `    <interface type="bridge">
      <mac address="52:54:00:12:34:56"></mac>
      <source bridge="labvm0"></source>
      <target dev="lvp1234abcd5678"></target>
      <model type="virtio"></model>
    </interface>
`
	spec := testSpec("labvm-alice-1234abcd", "1234abcd5678ef90", AccelTCG)
	spec.PortName = "lvp1234abcd5678"
	got, err := DomainXML(spec)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, nic) {
		t.Errorf("DomainXML lacks the NIC with its target dev:\n%s\nwant:\n%s", got, nic)
	}
	// Apart from the target, nothing changes.
	if strings.Replace(got, `      <target dev="lvp1234abcd5678"></target>
`, "", 1) != wantTCGXML {
		t.Errorf("PortName changed more than the NIC's target:\n%s", got)
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
		{"long port name", func(s *DomainSpec) { s.PortName = "lvp0123456789abc" }, "15 characters"},
		{"port name with a slash", func(s *DomainSpec) { s.PortName = "lvp/1" }, "only letters"},
		{"port name libvirt reserves", func(s *DomainSpec) { s.PortName = "vnet7" }, `reserves the prefix "vnet"`},
		{"port name libvirt reserves (macvtap)", func(s *DomainSpec) { s.PortName = "macvtap1" }, "macvtap"},
		{"relative share source", func(s *DomainSpec) { s.Shares = []Share{{Source: "data", Tag: "data"}} }, "share source"},
		{"empty share tag", func(s *DomainSpec) { s.Shares = []Share{{Source: "/d", Tag: ""}} }, "share tag"},
		{"long share tag", func(s *DomainSpec) { s.Shares = []Share{{Source: "/d", Tag: strings.Repeat("t", 37)}} }, "share tag"},
		{"share tag with a space", func(s *DomainSpec) { s.Shares = []Share{{Source: "/d", Tag: "a b"}} }, "share tag"},
		{"share tag twice", func(s *DomainSpec) { s.Shares = []Share{{Source: "/a", Tag: "data"}, {Source: "/b", Tag: "data"}} }, "given twice"},
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

// testSpec is a typical instance's domain.
func testSpec(name, id string, accel Accel) DomainSpec {
	dir := "/var/lib/labvm/instances/" + id
	return DomainSpec{
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

// TestDomainXMLShares: each share is a virtio-fs device served by
// libvirt's virtiofsd in its namespace sandbox, and the guest's memory
// becomes shared memfd (vhost-user needs it); without shares neither.
func TestDomainXMLShares(t *testing.T) {
	const memory = `  <memoryBacking>
    <source type="memfd"></source>
    <access mode="shared"></access>
  </memoryBacking>
`
	fs := func(src, tag string) string {
		return `    <filesystem type="mount" accessmode="passthrough">
      <driver type="virtiofs"></driver>
      <binary>
        <sandbox mode="namespace"></sandbox>
      </binary>
      <source dir="` + src + `"></source>
      <target dir="` + tag + `"></target>
    </filesystem>
`
	}
	const root = "/var/lib/labvm/datasets/1234abcd5678ef90/"
	for _, tc := range []struct {
		name   string
		shares []Share
		want   []string
	}{
		{"none", nil, nil},
		{"one", []Share{{Source: root + "imagenet", Tag: "imagenet"}}, []string{memory, fs(root+"imagenet", "imagenet")}},
		{"two, in order", []Share{{Source: root + "imagenet", Tag: "imagenet"}, {Source: root + "coco", Tag: "coco"}},
			[]string{memory, fs(root+"imagenet", "imagenet") + fs(root+"coco", "coco")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec("labvm-alice-1234abcd", "1234abcd5678ef90", AccelTCG)
			spec.Shares = tc.shares
			got, err := DomainXML(spec)
			if err != nil {
				t.Fatal(err)
			}
			rest := got
			for _, w := range tc.want {
				if !strings.Contains(rest, w) {
					t.Fatalf("DomainXML lacks\n%s\nin\n%s", w, got)
				}
				rest = strings.Replace(rest, w, "", 1)
			}
			// Apart from those, the domain is the usual one.
			if rest != wantTCGXML {
				t.Errorf("shares changed more than the memory backing and the filesystems:\n%s", got)
			}
		})
	}
}
