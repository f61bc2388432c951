package systemd

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// installedBinary is where `make install` puts labvmd and where the
// service's ExecStart= points.
const installedBinary = "/usr/local/sbin/labvmd"

// TestUnitsVerify runs systemd's own checker on the units. It works
// without systemd as PID 1: verify loads the units into a private manager.
// ExecStart= is pointed at an existing executable because verify insists
// the binary exists, and labvmd is not installed on a test machine.
func TestUnitsVerify(t *testing.T) {
	analyze := hostreq.RequireTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	var paths []string
	for name, body := range Units() {
		if name == "labvmd.service" {
			if !bytes.Contains(body, []byte("ExecStart="+installedBinary+"\n")) {
				t.Fatalf("labvmd.service: no ExecStart=%s to substitute", installedBinary)
			}
			body = bytes.ReplaceAll(body, []byte("ExecStart="+installedBinary), []byte("ExecStart=/bin/true"))
		}
		// labvm-guests.service runs the CLI, which is not installed here either.
		body = bytes.ReplaceAll(body, []byte("/usr/local/bin/labvm "), []byte("/bin/true "))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// --man=no: Documentation= pages need not be installed here.
	// --generators=no: generators probe the real host and can fail in
	// containers; they add nothing to checking these two files.
	cmd := exec.CommandContext(ctx, analyze, append([]string{"verify", "--man=no", "--generators=no"}, paths...)...)
	// A debug log level in the caller's environment would flood the output,
	// which must be empty: verify exits 0 on unknown keys and only warns.
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// parseUnit returns section -> key -> values, the subset of systemd's
// syntax the units use (no line continuations).
func parseUnit(t *testing.T, body []byte) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("cannot parse unit line %q", line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestUnitSettings pins the settings other code depends on, so an edit to
// a unit that would break the daemon's contract fails here, with the reason.
func TestUnitSettings(t *testing.T) {
	units := Units()
	tests := []struct {
		unit, section, key, want, why string
	}{
		{"labvmd.service", "Service", "Type", "notify", "labvmd sends READY=1 through Notifier.Ready"},
		{"labvmd.service", "Service", "NotifyAccess", "main", "only labvmd, not qemu-img, may notify"},
		{"labvmd.service", "Service", "ExecStart", installedBinary, "make install puts labvmd there"},
		{"labvmd.service", "Service", "WatchdogSec", "30s", "RunWatchdog pings at half of it"},
		{"labvmd.service", "Service", "Restart", "on-failure", "a watchdog timeout must restart the daemon"},
		{"labvmd.service", "Service", "KillMode", "mixed", "labvmd stops its own children; VMs are not in its cgroup"},
		{"labvmd.service", "Service", "PrivateDevices", "", "would hide /dev/kvm"},
		{"labvmd.service", "Service", "PrivateTmp", "", "imports from /tmp must see the host's /tmp"},
		{"labvmd.service", "Service", "PrivateNetwork", "", "bridges live in the host's network namespace"},
		{"labvmd.service", "Service", "RuntimeDirectory", "", "would delete the socket unit's socket on stop"},
		{"labvmd.service", "Unit", "Wants", "labvmd.socket", "the API socket comes from the socket unit"},
		// cmd/labvmd's tests check this path against the client's default.
		{"labvmd.socket", "Socket", "ListenStream", "/run/labvm/labvm.sock", "clients dial the default socket"},
		{"labvmd.socket", "Socket", "SocketGroup", "labvm", "the labvm group may use the API"},
		{"labvmd.socket", "Socket", "SocketMode", "0660", "root and the labvm group only"},
		{"labvmd.socket", "Socket", "RemoveOnStop", "no", "a running labvmd must stay reachable by path"},
		{"labvmd.socket", "Socket", "Accept", "no", "one daemon serves every connection"},
		{"labvmd.socket", "Socket", "FileDescriptorName", "labvmd.socket", "the daemon asks UnixListener for this name"},
		{"labvmd.socket", "Install", "WantedBy", "sockets.target", "the socket exists from boot"},
		{"labvm-guests.service", "Unit", "After", "labvmd.service", "it must stop before labvmd, while labvmd can still stop guests"},
		{"labvm-guests.service", "Service", "ExecStop", "/usr/local/bin/labvm", "the host-shutdown path of the daemon"},
		{"labvm-guests.service", "Service", "RemainAfterExit", "yes", "so that it is active and gets stopped at shutdown"},
	}
	parsed := map[string]map[string]map[string][]string{}
	for name, body := range units {
		parsed[name] = parseUnit(t, body)
	}
	if len(parsed) != 3 {
		t.Errorf("Units() = %d files, want labvmd.service, labvmd.socket and labvm-guests.service", len(parsed))
	}
	for _, tt := range tests {
		t.Run(tt.unit+"/"+tt.key, func(t *testing.T) {
			u, ok := parsed[tt.unit]
			if !ok {
				t.Fatalf("no unit %s", tt.unit)
			}
			got := u[tt.section][tt.key]
			if tt.want == "" {
				if len(got) > 0 {
					t.Errorf("[%s] %s=%q is set; it must not be: %s", tt.section, tt.key, got, tt.why)
				}
				return
			}
			for _, v := range got {
				for _, w := range strings.Fields(v) {
					if w == tt.want {
						return
					}
				}
			}
			t.Errorf("[%s] %s=%q, want %q: %s", tt.section, tt.key, got, tt.want, tt.why)
		})
	}
}

// TestUnitsFor: the package's units name /usr's binaries and no
// /usr/local path at all; the default prefix gives the embedded units.
func TestUnitsFor(t *testing.T) {
	for name, body := range UnitsFor("/usr") {
		if bytes.Contains(body, []byte("/usr/local")) {
			t.Errorf("%s for /usr still names /usr/local:\n%s", name, body)
		}
	}
	pkg := UnitsFor("/usr/")
	for unit, want := range map[string]string{
		"labvmd.service":       "\nExecStart=/usr/sbin/labvmd\n",
		"labvm-guests.service": "\nExecStop=/usr/bin/labvm host shutdown\n",
	} {
		if !bytes.Contains(pkg[unit], []byte(want)) {
			t.Errorf("%s lacks %q", unit, want)
		}
	}
	for name, body := range UnitsFor(DefaultPrefix) {
		if !bytes.Equal(body, Units()[name]) {
			t.Errorf("%s under the default prefix differs from the embedded unit", name)
		}
	}
}
