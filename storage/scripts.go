package storage

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/labvm/labvm/vm/shell"
)

// Guest paths of the script machinery. The daemon reads the status and
// log files back through the guest agent, so they are part of the
// contract with it.
const (
	GuestScriptDir   = "/var/lib/labvm"
	guestRunner      = GuestScriptDir + "/run-script"
	guestPerBootHook = "/var/lib/cloud/scripts/per-boot/labvm-startup"
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
func (k ScriptKind) StatusPath() string { return GuestScriptDir + "/" + string(k) + ".status" }

// LogPath is where the guest keeps the script's output.
func (k ScriptKind) LogPath() string { return "/var/log/labvm-" + string(k) + ".log" }

func (k ScriptKind) scriptPath() string { return GuestScriptDir + "/" + string(k) + ".sh" }

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

// runScript is the guest-side runner: it runs a script with a timeout,
// keeps its output and records its exit code with the boot id, so the
// daemon can tell this boot's result from an older one.
//
//go:embed guest/run-script.sh
var runScript string

// Scripts are what the guest runs besides cloud-init itself.
type Scripts struct {
	Setup   []byte
	Startup []byte
	// Timeout bounds each script; past it the script counts as failed.
	Timeout time.Duration
	// DoneURL, when set, is told of each script's end, for guests without
	// the QEMU guest agent.
	DoneURL string
}

func (s Scripts) empty() bool { return len(s.Setup) == 0 && len(s.Startup) == 0 }

// writeScripts renders write_files and the runcmd line of the scripts.
// Files travel base64-encoded, so no script byte is ever YAML.
func writeScripts(b *bytes.Buffer, s Scripts) (runcmd []string) {
	timeout := strconv.Itoa(int(s.Timeout.Seconds()))
	file := func(path, perm string, content []byte) {
		fmt.Fprintf(b, "  - path: %s\n", yamlQuote(path))
		fmt.Fprintf(b, "    permissions: %s\n", yamlQuote(perm))
		b.WriteString("    encoding: \"b64\"\n")
		fmt.Fprintf(b, "    content: %s\n", yamlQuote(base64.StdEncoding.EncodeToString(content)))
	}
	b.WriteString("write_files:\n")
	file(guestRunner, "0755", []byte(runScript))
	if len(s.Setup) > 0 {
		file(ScriptSetup.scriptPath(), "0700", s.Setup)
		// runcmd runs once per instance, after users and network exist.
		runcmd = append(runcmd, shell.Join(guestRunner, string(ScriptSetup), ScriptSetup.scriptPath(), timeout, s.DoneURL))
	}
	if len(s.Startup) > 0 {
		file(ScriptStartup.scriptPath(), "0700", s.Startup)
		// cloud-init runs per-boot scripts at every boot; the runner goes to
		// the background so a first boot's setup (runcmd, later in the same
		// stage) is not blocked behind it; it waits for setup itself.
		hook := "#!/bin/sh\n" + shell.Join(guestRunner, string(ScriptStartup), ScriptStartup.scriptPath(), timeout, s.DoneURL) + " </dev/null >/dev/null 2>&1 &\n"
		file(guestPerBootHook, "0755", []byte(hook))
	}
	return runcmd
}
