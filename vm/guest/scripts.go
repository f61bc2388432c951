package guest

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/labvm/labvm/vm"
)

// Guest paths of the script machinery. The daemon reads the status and
// log files back through the guest agent, so they are part of the
// contract with it.
const (
	// ScriptDir holds the runner, the scripts and their status files.
	ScriptDir = "/var/lib/labvm"
	// RunnerPath is where Runner is installed.
	RunnerPath = ScriptDir + "/run-script"
	// PerBootHookPath is the cloud-init per-boot hook that starts the
	// startup script.
	PerBootHookPath = "/var/lib/cloud/scripts/per-boot/labvm-startup"
)

// ScriptKind is which of an instance's scripts.
type ScriptKind string

const (
	// ScriptSetup runs once, at the instance's first boot.
	ScriptSetup ScriptKind = "setup"
	// ScriptStartup runs at every boot.
	ScriptStartup ScriptKind = "startup"
)

// StatusPath is where the guest records "EXIT BOOT_ID" when a script ends.
func (k ScriptKind) StatusPath() string { return ScriptDir + "/" + string(k) + ".status" }

// LogPath is where the guest keeps the script's output.
func (k ScriptKind) LogPath() string { return "/var/log/labvm-" + string(k) + ".log" }

// ScriptPath is where the script itself is written in the guest.
func (k ScriptKind) ScriptPath() string { return ScriptDir + "/" + string(k) + ".sh" }

// MaxScriptSize bounds a setup or startup script: it travels in the seed,
// and anything bigger belongs in an image or a download.
const MaxScriptSize = 64 << 10

// ErrInvalidScript is wrapped by every rejection of a script.
var ErrInvalidScript = errors.New("invalid script")

// ValidateScript checks a script is text of a sane size.
func ValidateScript(kind ScriptKind, b []byte) error {
	switch {
	case len(b) == 0:
		return fmt.Errorf("%w: the %s script is empty", ErrInvalidScript, kind)
	case len(b) > MaxScriptSize:
		return fmt.Errorf("%w: the %s script is %d bytes; the limit is %d (64 KiB): download larger payloads from the script instead", ErrInvalidScript, kind, len(b), MaxScriptSize)
	case !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0:
		return fmt.Errorf("%w: the %s script is not valid UTF-8 text", ErrInvalidScript, kind)
	}
	return nil
}

// runner is the guest-side runner, installed at RunnerPath: it runs a
// script with a timeout, keeps its output and records its exit code with
// the boot id, so the daemon can tell this boot's result from an older
// one. Usage: run-script KIND SCRIPT TIMEOUT_SECONDS [DONE_URL].
//
//go:embed run-script.sh
var runner string

// Runner returns the runner script, to be installed at RunnerPath.
func Runner() string { return runner }

// ScriptStatusRequest is the guest-exec that prints the guest's current
// boot id, then the kind's status file ("EXIT BOOT_ID") if the runner has
// written it.
func ScriptStatusRequest(kind ScriptKind) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c",
		"cat /proc/sys/kernel/random/boot_id; cat " + kind.StatusPath() + " 2>/dev/null || true"}}
}

// ParseScriptStatus decodes what ScriptStatusRequest printed: done is
// true only when the script ended during the current boot (an earlier
// boot's result does not count), and exit is then its exit code.
func ParseScriptStatus(kind ScriptKind, out []byte) (exit int, done bool, err error) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 {
		return 0, false, nil
	}
	boot, f := strings.TrimSpace(lines[0]), strings.Fields(lines[1])
	if len(f) < 2 || f[1] != boot {
		return 0, false, nil // an earlier boot's result
	}
	exit, err = strconv.Atoi(f[0])
	if err != nil {
		return 0, false, fmt.Errorf("read %s status %q: %w", kind, lines[1], err)
	}
	return exit, true, nil
}

// ScriptLogRequest is the guest-exec that prints the last max bytes of
// the kind's output (nothing when there is none yet).
func ScriptLogRequest(kind ScriptKind, max int) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c",
		"tail -c " + strconv.Itoa(max) + " " + kind.LogPath() + " 2>/dev/null || true"}}
}
