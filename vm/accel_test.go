package vm

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestChooseAccel(t *testing.T) {
	intel := HostFacts{KVMDevice: true, CPUFlags: []string{"fpu", "vmx", "sse2"}, Modules: []string{"kvm", "kvm_intel"}}
	amd := HostFacts{KVMDevice: true, CPUFlags: []string{"fpu", "svm"}, Modules: []string{"kvm_amd", "kvm"}}
	pvm := HostFacts{KVMDevice: true, CPUFlags: []string{"fpu", "sse2", "hypervisor"}, Modules: []string{"kvm_pvm", "kvm"}}

	tests := []struct {
		name       string
		mode       AccelMode
		host       HostFacts
		want       Accel
		reasonPart string
	}{
		{"auto intel", AccelAuto, intel, AccelKVM, "kvm_intel"},
		{"auto amd", AccelAuto, amd, AccelKVM, "kvm_amd"},
		{"auto kvm_pvm fake", AccelAuto, pvm, AccelTCG, "kvm_pvm module without vmx/svm"},
		{"auto no device", AccelAuto, HostFacts{CPUFlags: []string{"vmx"}, Modules: []string{"kvm_intel"}}, AccelTCG, "no /dev/kvm"},
		{"auto no flag", AccelAuto, HostFacts{KVMDevice: true, Modules: []string{"kvm_intel"}}, AccelTCG, "no vmx/svm"},
		{"auto no vendor module", AccelAuto, HostFacts{KVMDevice: true, CPUFlags: []string{"vmx"}, Modules: []string{"kvm"}}, AccelTCG, "neither kvm_intel nor kvm_amd"},
		{"auto empty host", AccelAuto, HostFacts{}, AccelTCG, "no /dev/kvm"},
		{"forced kvm on fake", AccelForceKVM, pvm, AccelKVM, "forced"},
		{"forced tcg on intel", AccelForceTCG, intel, AccelTCG, "forced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := ChooseAccel(tt.mode, tt.host)
			if got != tt.want {
				t.Errorf("accel = %v, want %v (reason %q)", got, tt.want, reason)
			}
			if !strings.Contains(reason, tt.reasonPart) {
				t.Errorf("reason = %q, want it to mention %q", reason, tt.reasonPart)
			}
		})
	}
}

func TestAccelText(t *testing.T) {
	tests := []struct {
		text    string
		want    Accel
		wantErr bool
	}{
		{"tcg", AccelTCG, false},
		{"kvm", AccelKVM, false},
		{"auto", 0, true},
		{"KVM", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		var a Accel
		err := a.UnmarshalText([]byte(tt.text))
		if tt.wantErr {
			if !errors.Is(err, ErrUnknownAccel) {
				t.Errorf("UnmarshalText(%q) = %v, want ErrUnknownAccel", tt.text, err)
			}
			continue
		}
		if err != nil || a != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tt.text, a, err, tt.want)
		}
		b, err := a.MarshalText()
		if err != nil || string(b) != tt.text {
			t.Errorf("MarshalText(%v) = %q, %v; want %q", a, b, err, tt.text)
		}
	}
	if _, err := Accel(7).MarshalText(); !errors.Is(err, ErrUnknownAccel) {
		t.Errorf("MarshalText(Accel(7)) = %v, want ErrUnknownAccel", err)
	}
}

func TestAccelModeJSON(t *testing.T) {
	tests := []struct {
		json    string
		want    AccelMode
		wantErr bool
	}{
		{`"auto"`, AccelAuto, false},
		{`"kvm"`, AccelForceKVM, false},
		{`"tcg"`, AccelForceTCG, false},
		{`"hvf"`, 0, true},
	}
	for _, tt := range tests {
		var m AccelMode
		err := json.Unmarshal([]byte(tt.json), &m)
		if tt.wantErr {
			if !errors.Is(err, ErrUnknownAccel) {
				t.Errorf("Unmarshal(%s) = %v, want ErrUnknownAccel", tt.json, err)
			}
			continue
		}
		if err != nil || m != tt.want {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", tt.json, m, err, tt.want)
		}
		b, err := json.Marshal(m)
		if err != nil || string(b) != tt.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", m, b, err, tt.json)
		}
	}
}

func TestParseHostFiles(t *testing.T) {
	cpuinfo := `processor	: 0
vendor_id	: GenuineIntel
flags		: fpu vme sse2 vmx
bugs		:

processor	: 1
flags		: fpu other
`
	modules := `kvm_intel 380928 0 - Live 0x0000000000000000
kvm 1142784 1 kvm_intel, Live 0x0000000000000000

`
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"cpu flags of first processor", parseCPUFlags(strings.NewReader(cpuinfo)), []string{"fpu", "vme", "sse2", "vmx"}},
		{"no flags line", parseCPUFlags(strings.NewReader("processor : 0\n")), nil},
		{"modules", parseModules(strings.NewReader(modules)), []string{"kvm_intel", "kvm"}},
		{"no modules", parseModules(strings.NewReader("")), nil},
	}
	for _, tt := range tests {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestReadHostFactsHere documents this build host: it has a /dev/kvm from
// kvm_pvm that hangs guests, and auto must not pick it.
func TestReadHostFactsHere(t *testing.T) {
	h := ReadHostFacts()
	a, reason := ChooseAccel(AccelAuto, h)
	t.Logf("host: kvm device=%v, %d cpu flags, %d modules -> %v (%s)", h.KVMDevice, len(h.CPUFlags), len(h.Modules), a, reason)
	if slices.Contains(h.Modules, "kvm_pvm") && a == AccelKVM && !slices.Contains(h.CPUFlags, "vmx") && !slices.Contains(h.CPUFlags, "svm") {
		t.Errorf("auto chose KVM on a kvm_pvm host without vmx/svm")
	}
}
