package storage

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/vm/guest"
)

func scriptSpec() SeedSpec {
	return SeedSpec{
		InstanceID: "0123456789abcdef", Hostname: "alice-dev", MAC: "52:54:00:12:34:56",
		Address: netip.MustParsePrefix("10.177.0.10/24"), Gateway: netip.MustParseAddr("10.177.0.1"),
		Scripts: Scripts{
			Setup:   []byte("#!/bin/sh\necho 'set up' > /root/setup-ran\n"),
			Startup: []byte("echo started >> /root/startups\n"),
			Timeout: 15 * time.Minute,
		},
	}
}

func TestUserDataCarriesScripts(t *testing.T) {
	ud, err := UserData(scriptSpec())
	if err != nil {
		t.Fatal(err)
	}
	s := string(ud)
	for _, want := range []string{
		"write_files:\n  - path: \"/var/lib/labvm/run-script\"\n    permissions: \"0755\"\n    encoding: \"b64\"\n",
		"  - path: \"/var/lib/labvm/setup.sh\"\n    permissions: \"0700\"\n    encoding: \"b64\"\n    content: \"" + base64.StdEncoding.EncodeToString(scriptSpec().Scripts.Setup) + "\"\n",
		"  - path: \"/var/lib/cloud/scripts/per-boot/labvm-startup\"\n",
		"runcmd:\n" +
			"  - \"[ -x /usr/sbin/qemu-ga ] || [ -x /usr/bin/qemu-ga ] || command -v qemu-ga >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-guest-agent; } || { command -v dnf >/dev/null 2>&1 && dnf install -y -q qemu-guest-agent; } || echo \\\"labvm: could not install qemu-guest-agent\\\" >&2\"\n  - \"systemctl is-active --quiet qemu-guest-agent || systemctl enable --now qemu-guest-agent || true\"\n  - \"/var/lib/labvm/run-script setup /var/lib/labvm/setup.sh 900 ''\"\n  - \"read -r rc boot 2>/dev/null </var/lib/labvm/setup.status; [ \\\"$rc\\\" = 0 ] || { echo \\\"labvm: the setup script failed (exit ${rc:-unknown}); its output is in /var/log/labvm-setup.log\\\" >&2; exit 1; }\"\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("user-data lacks %q:\n%s", want, s)
		}
	}
}

func TestScriptValidation(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*SeedSpec)
	}{
		{"too big", func(s *SeedSpec) { s.Scripts.Setup = make([]byte, guest.MaxScriptSize+1) }},
		{"not text", func(s *SeedSpec) { s.Scripts.Startup = []byte{0xff, 0xfe, 0} }},
		{"NUL", func(s *SeedSpec) { s.Scripts.Setup = []byte("echo\x00") }},
		{"no timeout", func(s *SeedSpec) { s.Scripts.Timeout = 0 }},
	}
	for _, tt := range tests {
		s := scriptSpec()
		tt.mod(&s)
		if _, err := UserData(s); !errors.Is(err, ErrInvalidSeed) {
			t.Errorf("%s: err = %v, want ErrInvalidSeed", tt.name, err)
		}
	}
}
