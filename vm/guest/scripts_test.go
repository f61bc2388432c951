package guest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
)

func TestScriptPaths(t *testing.T) {
	tests := []struct {
		kind                ScriptKind
		script, status, log string
	}{
		{ScriptSetup, "/var/lib/labvm/setup.sh", "/var/lib/labvm/setup.status", "/var/log/labvm-setup.log"},
		{ScriptStartup, "/var/lib/labvm/startup.sh", "/var/lib/labvm/startup.status", "/var/log/labvm-startup.log"},
	}
	for _, tt := range tests {
		if got := tt.kind.ScriptPath(); got != tt.script {
			t.Errorf("%s.ScriptPath() = %q, want %q", tt.kind, got, tt.script)
		}
		if got := tt.kind.StatusPath(); got != tt.status {
			t.Errorf("%s.StatusPath() = %q, want %q", tt.kind, got, tt.status)
		}
		if got := tt.kind.LogPath(); got != tt.log {
			t.Errorf("%s.LogPath() = %q, want %q", tt.kind, got, tt.log)
		}
	}
}

func TestValidateScript(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		ok   bool
	}{
		{"text", []byte("#!/bin/sh\necho hi\n"), true},
		{"at the limit", []byte(strings.Repeat("#", MaxScriptSize)), true},
		{"empty", nil, false},
		{"too big", make([]byte, MaxScriptSize+1), false},
		{"not text", []byte{0xff, 0xfe}, false},
		{"NUL", []byte("echo\x00"), false},
	}
	for _, tt := range tests {
		err := ValidateScript(ScriptSetup, tt.body)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidScript)) {
			t.Errorf("%s: ValidateScript = %v, want ok=%v (or ErrInvalidScript)", tt.name, err, tt.ok)
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
	body := strings.NewReplacer("/var/lib/labvm", dir, "/var/log/labvm-", dir+"/log-").Replace(Runner())
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
