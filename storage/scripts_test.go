package storage

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
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
			"  - \"[ -x /usr/sbin/qemu-ga ] || [ -x /usr/bin/qemu-ga ] || command -v qemu-ga >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-guest-agent; } || { command -v dnf >/dev/null 2>&1 && dnf install -y -q qemu-guest-agent; } || echo \\\"labvm: could not install qemu-guest-agent\\\" >&2\"\n  - \"systemctl enable --now qemu-guest-agent || true\"\n  - \"/var/lib/labvm/run-script setup /var/lib/labvm/setup.sh 900 ''\"\n  - \"read -r rc boot 2>/dev/null </var/lib/labvm/setup.status; [ \\\"$rc\\\" = 0 ] || { echo \\\"labvm: the setup script failed (exit ${rc:-unknown}); its output is in /var/log/labvm-setup.log\\\" >&2; exit 1; }\"\n",
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
		{"too big", func(s *SeedSpec) { s.Scripts.Setup = make([]byte, MaxScriptSize+1) }},
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

// TestRunScriptRecordsExitAndTimeout runs the guest runner on this host:
// it is plain sh, so its contract can be checked without a VM.
func TestRunScriptRecordsExitAndTimeout(t *testing.T) {
	hostreq.RequireTool(t, "timeout", "coreutils")
	dir := t.TempDir()
	runner := filepath.Join(dir, "run-script")
	// The runner's fixed paths are rewritten into the test's directory.
	body := strings.NewReplacer("/var/lib/labvm", dir, "/var/log/labvm-", dir+"/log-").Replace(runScript)
	if err := os.WriteFile(runner, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		script, limit string
		exit          string
		logHas        string
	}{
		{"echo hello; exit 3", "10", "3", "hello"},
		{"#!/bin/sh\necho fine", "10", "0", "fine"},
		{"sleep 5", "1", "124", "did not finish within 1s"},
	} {
		script := filepath.Join(dir, "setup.sh")
		if err := os.WriteFile(script, []byte(tt.script), 0o700); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(filepath.Join(dir, "setup.status"))
		if out, err := exec.Command(runner, "setup", script, tt.limit, "").CombinedOutput(); err != nil {
			t.Fatalf("runner: %v\n%s", err, out)
		}
		status, _ := os.ReadFile(filepath.Join(dir, "setup.status"))
		if f := strings.Fields(string(status)); len(f) < 1 || f[0] != tt.exit {
			t.Errorf("script %q: status %q, want exit %s", tt.script, status, tt.exit)
		}
		log, _ := os.ReadFile(filepath.Join(dir, "log-setup.log"))
		if !strings.Contains(string(log), tt.logHas) {
			t.Errorf("script %q: log %q lacks %q", tt.script, log, tt.logHas)
		}
	}
}
