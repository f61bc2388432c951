package guest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labvm/labvm/test/hostreq"
	"github.com/labvm/labvm/vm"
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

// TestScriptReadRequests pins the exact commands the daemon runs in the
// guest to read a script's status and output.
func TestScriptReadRequests(t *testing.T) {
	tests := []struct {
		name string
		req  vm.ExecRequest
		want string
	}{
		{"setup status", ScriptStatusRequest(ScriptSetup),
			"cat /proc/sys/kernel/random/boot_id; cat /var/lib/labvm/setup.status 2>/dev/null || true"},
		{"startup status", ScriptStatusRequest(ScriptStartup),
			"cat /proc/sys/kernel/random/boot_id; cat /var/lib/labvm/startup.status 2>/dev/null || true"},
		{"setup log", ScriptLogRequest(ScriptSetup, 1<<20),
			"tail -c 1048576 /var/log/labvm-setup.log 2>/dev/null || true"},
	}
	for _, tt := range tests {
		if tt.req.Path != "/bin/sh" || !slices.Equal(tt.req.Args, []string{"-c", tt.want}) {
			t.Errorf("%s: %s %q, want /bin/sh -c %q", tt.name, tt.req.Path, tt.req.Args, tt.want)
		}
	}
}

func TestParseScriptStatus(t *testing.T) {
	const boot = "6c9a2d1e-0f3b-4c1d-9a8e-2b7f5e4d3c21"
	tests := []struct {
		name    string
		out     string
		exit    int
		done    bool
		wantErr bool
	}{
		{"this boot, success", boot + "\n0 " + boot + "\n", 0, true, false},
		{"this boot, failure", boot + "\n3 " + boot + "\n", 3, true, false},
		{"timed out", boot + "\n124 " + boot + "\n", 124, true, false},
		{"no status yet", boot + "\n", 0, false, false},
		{"nothing", "", 0, false, false},
		{"an earlier boot", boot + "\n0 11111111-2222-3333-4444-555555555555\n", 0, false, false},
		{"no boot id in status", boot + "\n0\n", 0, false, false},
		{"bad exit code", boot + "\nx " + boot + "\n", 0, false, true},
	}
	for _, tt := range tests {
		exit, done, err := ParseScriptStatus(ScriptSetup, []byte(tt.out))
		if exit != tt.exit || done != tt.done || (err != nil) != tt.wantErr {
			t.Errorf("%s: ParseScriptStatus = %d, %v, %v; want %d, %v, error %v", tt.name, exit, done, err, tt.exit, tt.done, tt.wantErr)
		}
	}
}

// TestScriptStatusRunsOnThisHost runs the status request with sh, its
// status file moved into a temp dir: a status of this boot counts, one of
// another boot does not.
func TestScriptStatusRunsOnThisHost(t *testing.T) {
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	hostreq.Require(t, err == nil, "no /proc/sys/kernel/random/boot_id")
	dir := t.TempDir()
	req := ScriptStatusRequest(ScriptSetup)
	script := strings.ReplaceAll(req.Args[1], ScriptDir, dir)
	status := filepath.Join(dir, "setup.status")
	for _, tt := range []struct {
		name   string
		status string // "" leaves no file
		exit   int
		done   bool
	}{
		{"no status", "", 0, false},
		{"this boot", "7 " + strings.TrimSpace(string(bootID)) + "\n", 7, true},
		{"another boot", "0 not-this-boot\n", 0, false},
	} {
		_ = os.Remove(status)
		if tt.status != "" {
			if err := os.WriteFile(status, []byte(tt.status), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out, err := exec.Command(req.Path, "-c", script).Output()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		exit, done, err := ParseScriptStatus(ScriptSetup, out)
		if err != nil || exit != tt.exit || done != tt.done {
			t.Errorf("%s: %d, %v, %v; want %d, %v", tt.name, exit, done, err, tt.exit, tt.done)
		}
	}
}
