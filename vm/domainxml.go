package vm

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// MetadataNamespace marks a libvirt domain as labvm's. Ownership is decided
// by this metadata, never by the domain name, so domains that merely look
// like ours are left alone.
const MetadataNamespace = "https://labvm.dev/xmlns/instance/1"

// NoCloudSerial is the SMBIOS system serial every domain carries: the
// datasource hint cloud-init's ds-identify and NoCloud read.
const NoCloudSerial = "ds=nocloud"

// ErrInvalidDomainSpec is returned by DomainXML for a spec that cannot
// describe a bootable domain.
var ErrInvalidDomainSpec = errors.New("invalid domain spec")

// DomainSpec is everything that differs between labvm domains; the rest of
// the domain shape is fixed by DomainXML.
type DomainSpec struct {
	// Name is the libvirt domain name.
	Name string
	// InstanceID is written into the labvm metadata so the daemon can map
	// a running domain back to its instance after a restart.
	InstanceID string
	VCPUs      int
	MemoryMiB  int
	// DiskPath is the instance's qcow2 root disk.
	DiskPath string
	// SeedPath is the NoCloud (cidata) ISO read by cloud-init.
	SeedPath string
	// Bridge is the host bridge the NIC is attached to.
	Bridge string
	// MAC is the NIC's address; DHCP reservations key on it.
	MAC string
	// PortName is the host-side (tap) device of the NIC, which the
	// firewall's port rules match: network.PortName(InstanceID). Empty
	// lets libvirt pick a vnetN name no rule knows.
	PortName string
	// ConsoleLog receives everything the guest writes to its serial port.
	ConsoleLog string
	Accel      Accel
	// Emulator overrides the QEMU binary; empty lets libvirt choose.
	Emulator string
	// Shares are host directories exported to the guest over virtiofs.
	// Read-only is the host's business (Source must already be a
	// read-only mount): virtiofs in this libvirt has no readonly flag.
	Shares []Share
}

// Share is one host directory the guest mounts by its tag.
type Share struct {
	// Source is the host directory virtiofsd serves.
	Source string
	// Tag is the name the guest mounts (mount -t virtiofs TAG DIR); the
	// virtio-fs device holds at most 36 bytes of it.
	Tag string
}

func (s DomainSpec) validate() error {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if s.Name == "" {
		bad("empty name")
	}
	if s.InstanceID == "" {
		bad("empty instance id")
	}
	if s.VCPUs < 1 {
		bad("vcpus %d: want at least 1", s.VCPUs)
	}
	if s.MemoryMiB < 64 {
		bad("memory %d MiB: want at least 64", s.MemoryMiB)
	}
	for _, p := range []struct{ what, path string }{
		{"disk", s.DiskPath}, {"seed", s.SeedPath}, {"console log", s.ConsoleLog},
	} {
		if !filepath.IsAbs(p.path) {
			bad("%s path %q: want an absolute path", p.what, p.path)
		}
	}
	if s.Emulator != "" && !filepath.IsAbs(s.Emulator) {
		bad("emulator %q: want an absolute path", s.Emulator)
	}
	if s.Bridge == "" {
		bad("empty bridge")
	}
	if hw, err := net.ParseMAC(s.MAC); err != nil || len(hw) != 6 {
		bad("mac %q: want a 6-byte address like 52:54:00:12:34:56", s.MAC)
	}
	if s.PortName != "" {
		if problem := portNameProblem(s.PortName); problem != "" {
			bad("port name %q: %s", s.PortName, problem)
		}
	}
	tags := map[string]bool{}
	for _, sh := range s.Shares {
		if !filepath.IsAbs(sh.Source) {
			bad("share source %q: want an absolute path", sh.Source)
		}
		if sh.Tag == "" || len(sh.Tag) > 36 || strings.ContainsFunc(sh.Tag, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			bad("share tag %q: want 1-36 printable characters", sh.Tag)
		}
		if tags[sh.Tag] {
			bad("share tag %q given twice", sh.Tag)
		}
		tags[sh.Tag] = true
	}
	if s.Accel != AccelTCG && s.Accel != AccelKVM {
		bad("accel %v: want tcg or kvm", s.Accel)
	}
	if len(problems) == 0 {
		return nil
	}
	// All problems at once: a caller fixing a config should not have to
	// iterate one error per run.
	return fmt.Errorf("%w %q: %s", ErrInvalidDomainSpec, s.Name, strings.Join(problems, "; "))
}

// libvirtReservedPrefixes are the tap name prefixes libvirt keeps for the
// names it generates: it ignores a requested name that starts with one of
// them and picks its own, which no firewall rule would know.
var libvirtReservedPrefixes = []string{"vnet", "vif", "macvtap", "macvlan"}

func portNameProblem(name string) string {
	if len(name) > 15 {
		return "longer than the kernel's 15 characters"
	}
	for _, c := range name {
		ok := c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !ok {
			return "only letters, digits, '-', '_' and '.' are allowed"
		}
	}
	for _, p := range libvirtReservedPrefixes {
		if strings.HasPrefix(name, p) {
			return fmt.Sprintf("libvirt reserves the prefix %q for names it picks", p)
		}
	}
	return ""
}

// instanceMetadata is the element written under MetadataNamespace. The
// prefixed names are literal because libvirt stores the element verbatim.
type instanceMetadata struct {
	XMLName xml.Name `xml:"labvm:instance"`
	NS      string   `xml:"xmlns:labvm,attr"`
	ID      string   `xml:"labvm:id"`
}

func nic(spec DomainSpec) libvirtxml.DomainInterface {
	n := libvirtxml.DomainInterface{
		MAC:    &libvirtxml.DomainInterfaceMAC{Address: spec.MAC},
		Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: spec.Bridge}},
		Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
	}
	if spec.PortName != "" {
		n.Target = &libvirtxml.DomainInterfaceTarget{Dev: spec.PortName}
	}
	return n
}

// share is the virtio-fs device of one share. libvirt starts one
// virtiofsd per device (found through QEMU's vhost-user descriptors), in
// its namespace sandbox: its own mount namespace pivoted into Source, so
// the guest's paths, ".." included, resolve inside it.
func share(sh Share) libvirtxml.DomainFilesystem {
	return libvirtxml.DomainFilesystem{
		AccessMode: "passthrough",
		Driver:     &libvirtxml.DomainFilesystemDriver{Type: "virtiofs"},
		Binary:     &libvirtxml.DomainFilesystemBinary{Sandbox: &libvirtxml.DomainFilesystemBinarySandbox{Mode: "namespace"}},
		Source:     &libvirtxml.DomainFilesystemSource{Mount: &libvirtxml.DomainFilesystemSourceMount{Dir: sh.Source}},
		Target:     &libvirtxml.DomainFilesystemTarget{Dir: sh.Tag},
	}
}

// DomainXML renders the libvirt domain for spec. It is pure: the same spec
// always yields the same XML, and nothing on the host is consulted.
func DomainXML(spec DomainSpec) (string, error) {
	if err := spec.validate(); err != nil {
		return "", err
	}
	meta, err := xml.Marshal(instanceMetadata{NS: MetadataNamespace, ID: spec.InstanceID})
	if err != nil {
		return "", fmt.Errorf("domain %s: encode metadata: %w", spec.Name, err)
	}

	port0 := uint(0)
	dom := &libvirtxml.Domain{
		Type:     "qemu",
		Name:     spec.Name,
		Metadata: &libvirtxml.DomainMetadata{XML: string(meta)},
		Memory:   &libvirtxml.DomainMemory{Value: uint(spec.MemoryMiB), Unit: "MiB"},
		VCPU:     &libvirtxml.DomainVCPU{Value: uint(spec.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type:        &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "q35", Type: "hvm"},
			BootDevices: []libvirtxml.DomainBootDevice{{Dev: "hd"}},
			SMBios:      &libvirtxml.DomainSMBios{Mode: "sysinfo"},
		},
		// cloud-init reads its datasource from the SMBIOS system serial
		// (QEMU's -smbios type=1,serial=…): "ds=nocloud" names NoCloud,
		// so it reads the cidata seed at once instead of probing every
		// cloud's metadata service first.
		SysInfo: []libvirtxml.DomainSysInfo{{SMBIOS: &libvirtxml.DomainSysInfoSMBIOS{
			System: &libvirtxml.DomainSysInfoSystem{Entry: []libvirtxml.DomainSysInfoEntry{{Name: "serial", Value: NoCloudSerial}}},
		}}},
		Features: &libvirtxml.DomainFeatureList{
			ACPI: &libvirtxml.DomainFeature{},
			APIC: &libvirtxml.DomainFeatureAPIC{},
		},
		// The daemon, not libvirt, decides what happens after a guest
		// powers off or crashes, so both simply end the transient domain.
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Emulator: spec.Emulator,
			Disks: []libvirtxml.DomainDisk{
				{
					Device: "disk",
					Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2", Discard: "unmap"},
					Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: spec.DiskPath}},
					Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
				},
				// The seed sits on virtio-scsi rather than libvirt's q35
				// default cdrom bus (SATA/AHCI): Debian genericcloud and
				// Ubuntu cloud kernels ship virtio_scsi and ata_piix but no
				// AHCI driver, so on SATA cloud-init would never see the
				// cidata volume and the guest would boot unconfigured.
				{
					Device:   "cdrom",
					Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
					Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: spec.SeedPath}},
					Target:   &libvirtxml.DomainDiskTarget{Dev: "sda", Bus: "scsi"},
					ReadOnly: &libvirtxml.DomainDiskReadOnly{},
				},
			},
			// No USB at all: nothing uses it without graphics, and an
			// emulated xHCI controller costs CPU under TCG.
			Controllers: []libvirtxml.DomainController{
				{Type: "scsi", Model: "virtio-scsi"},
				{Type: "usb", Model: "none"},
			},
			Interfaces: []libvirtxml.DomainInterface{nic(spec)},
			// The serial log is the only record of a boot that never
			// reaches the network; append keeps earlier boots for
			// comparison.
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainSerialTarget{Port: &port0},
				Log:    &libvirtxml.DomainChardevLog{File: spec.ConsoleLog, Append: "on"},
			}},
			Consoles: []libvirtxml.DomainConsole{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port0},
			}},
			// No source path: libvirt picks one under its own run
			// directory with the right SELinux/AppArmor labels.
			Channels: []libvirtxml.DomainChannel{{
				Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{}},
				Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0"}},
			}},
			// Cloud images generate SSH host keys on first boot; without
			// an RNG that can stall for minutes under TCG.
			RNGs: []libvirtxml.DomainRNG{{
				Model:   "virtio",
				Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
			}},
			// Memory is a fixed part of the size; a balloon would only let
			// the host take it back behind the user's back.
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	if len(spec.Shares) > 0 {
		// virtiofsd (a vhost-user daemon) reads and writes guest memory
		// directly, so the guest's RAM must be shared memory: memfd,
		// which needs no hugepages or backing file.
		dom.MemoryBacking = &libvirtxml.DomainMemoryBacking{
			MemorySource: &libvirtxml.DomainMemorySource{Type: "memfd"},
			MemoryAccess: &libvirtxml.DomainMemoryAccess{Mode: "shared"},
		}
		for _, sh := range spec.Shares {
			dom.Devices.Filesystems = append(dom.Devices.Filesystems, share(sh))
		}
	}
	if spec.Accel == AccelKVM {
		dom.Type = "kvm"
		dom.CPU = &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	// Under TCG the CPU element is left out: QEMU's default model is the
	// one every TCG version emulates completely, and host-passthrough is
	// meaningless without KVM.

	out, err := dom.Marshal()
	if err != nil {
		return "", fmt.Errorf("domain %s: marshal xml: %w", spec.Name, err)
	}
	return out, nil
}
