package vm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Accel is the acceleration a domain actually runs with. It is recorded on
// the instance so users can see why their VM is slow.
type Accel int

const (
	// AccelTCG is QEMU's software emulation: slow, but works everywhere.
	AccelTCG Accel = iota
	// AccelKVM is hardware virtualization through /dev/kvm.
	AccelKVM
)

// ErrUnknownAccel is returned when parsing an acceleration or mode name
// that is not one of the known values.
var ErrUnknownAccel = errors.New("unknown acceleration")

func (a Accel) String() string {
	switch a {
	case AccelTCG:
		return "tcg"
	case AccelKVM:
		return "kvm"
	}
	return fmt.Sprintf("Accel(%d)", int(a))
}

// MarshalText refuses values outside the enum so a corrupt record is caught
// when written, not when some later reader chokes on "Accel(7)".
func (a Accel) MarshalText() ([]byte, error) {
	if a != AccelTCG && a != AccelKVM {
		return nil, fmt.Errorf("marshal %v: %w", a, ErrUnknownAccel)
	}
	return []byte(a.String()), nil
}

func (a *Accel) UnmarshalText(b []byte) error {
	switch string(b) {
	case "tcg":
		*a = AccelTCG
	case "kvm":
		*a = AccelKVM
	default:
		return fmt.Errorf("%w %q: want tcg or kvm", ErrUnknownAccel, b)
	}
	return nil
}

// AccelMode is the operator's choice in the daemon config. It differs from
// Accel because "auto" is a policy, not something a domain can run with.
type AccelMode int

const (
	// AccelAuto uses KVM only where it really works, else TCG.
	AccelAuto AccelMode = iota
	// AccelForceKVM always uses KVM; for hosts whose probe is wrong.
	AccelForceKVM
	// AccelForceTCG always uses TCG.
	AccelForceTCG
)

var accelModeNames = [...]string{
	AccelAuto:     "auto",
	AccelForceKVM: "kvm",
	AccelForceTCG: "tcg",
}

func (m AccelMode) String() string {
	if m < 0 || int(m) >= len(accelModeNames) {
		return fmt.Sprintf("AccelMode(%d)", int(m))
	}
	return accelModeNames[m]
}

// ParseAccelMode accepts the config spellings auto, kvm and tcg.
func ParseAccelMode(s string) (AccelMode, error) {
	for i, n := range accelModeNames {
		if n == s {
			return AccelMode(i), nil
		}
	}
	return AccelAuto, fmt.Errorf("%w mode %q: want auto, kvm or tcg", ErrUnknownAccel, s)
}

func (m AccelMode) MarshalText() ([]byte, error) {
	if m < 0 || int(m) >= len(accelModeNames) {
		return nil, fmt.Errorf("marshal %v: %w", m, ErrUnknownAccel)
	}
	return []byte(m.String()), nil
}

func (m *AccelMode) UnmarshalText(b []byte) error {
	v, err := ParseAccelMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// HostFacts is what the acceleration choice depends on, gathered once so
// the decision itself stays pure and testable.
type HostFacts struct {
	// KVMDevice reports whether /dev/kvm exists.
	KVMDevice bool
	// CPUFlags are the flags of the first processor in /proc/cpuinfo.
	CPUFlags []string
	// Modules are the names of the loaded kernel modules.
	Modules []string
}

// ChooseAccel decides the acceleration for mode on a host and says why, so
// the daemon can log and show the reason instead of a bare "tcg".
func ChooseAccel(mode AccelMode, host HostFacts) (Accel, string) {
	switch mode {
	case AccelForceKVM:
		return AccelKVM, "kvm forced by configuration"
	case AccelForceTCG:
		return AccelTCG, "tcg forced by configuration"
	}
	if !host.KVMDevice {
		return AccelTCG, "no /dev/kvm"
	}
	// /dev/kvm alone proves nothing: paravirtual KVM modules such as
	// kvm_pvm create it on hosts without hardware virtualization, and
	// guests hang under them. Only the real vendor modules on a CPU with
	// vmx/svm are trusted.
	hasVirt := slices.Contains(host.CPUFlags, "vmx") || slices.Contains(host.CPUFlags, "svm")
	vendor := ""
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if slices.Contains(host.Modules, m) {
			vendor = m
			break
		}
	}
	switch {
	case hasVirt && vendor != "":
		return AccelKVM, fmt.Sprintf("/dev/kvm with %s and hardware virtualization", vendor)
	case slices.Contains(host.Modules, "kvm_pvm") && !hasVirt:
		return AccelTCG, "kvm_pvm module without vmx/svm: guests hang under it"
	case !hasVirt:
		return AccelTCG, "/dev/kvm exists but the CPU has no vmx/svm flag"
	default:
		return AccelTCG, "/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded"
	}
}

// ReadHostFacts probes the running host. Unreadable sources count as "not
// present": the worst outcome is TCG, which is slow but always boots.
func ReadHostFacts() HostFacts {
	var h HostFacts
	if fi, err := os.Stat("/dev/kvm"); err == nil && fi.Mode()&os.ModeDevice != 0 {
		h.KVMDevice = true
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		h.CPUFlags = parseCPUFlags(f)
		f.Close()
	}
	if f, err := os.Open("/proc/modules"); err == nil {
		h.Modules = parseModules(f)
		f.Close()
	}
	return h
}

// parseCPUFlags returns the flags of the first processor; virtualization
// support is uniform across cores, and cpuinfo on big hosts is megabytes.
func parseCPUFlags(r io.Reader) []string {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(key) == "flags" {
			return strings.Fields(val)
		}
	}
	return nil
}

func parseModules(r io.Reader) []string {
	var mods []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			mods = append(mods, f[0])
		}
	}
	return mods
}
