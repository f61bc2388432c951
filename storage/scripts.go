package storage

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"github.com/labvm/labvm/vm/guest"
	"github.com/labvm/labvm/vm/shell"
)

// Scripts are what the guest runs besides cloud-init itself. Where they
// go in the guest and the runner that runs them are package guest's.
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
	file := func(path, perm string, content []byte) { writeFile(b, path, perm, content) }
	file(guest.RunnerPath, "0755", []byte(guest.Runner()))
	if len(s.Setup) > 0 {
		file(guest.ScriptSetup.ScriptPath(), "0700", s.Setup)
		// runcmd runs once per instance, after users and network exist.
		runcmd = append(runcmd, shell.Join(guest.RunnerPath, string(guest.ScriptSetup), guest.ScriptSetup.ScriptPath(), timeout, s.DoneURL))
	}
	if len(s.Startup) > 0 {
		file(guest.ScriptStartup.ScriptPath(), "0700", s.Startup)
		// cloud-init runs per-boot scripts at every boot; the runner goes to
		// the background so a first boot's setup (runcmd, later in the same
		// stage) is not blocked behind it; it waits for setup itself.
		hook := "#!/bin/sh\n" + shell.Join(guest.RunnerPath, string(guest.ScriptStartup), guest.ScriptStartup.ScriptPath(), timeout, s.DoneURL) + " </dev/null >/dev/null 2>&1 &\n"
		file(guest.PerBootHookPath, "0755", []byte(hook))
	}
	return runcmd
}

// writeFile renders one write_files entry (the caller wrote the
// "write_files:" key), its content base64 so no byte of it is YAML.
func writeFile(b *bytes.Buffer, path, perm string, content []byte) {
	fmt.Fprintf(b, "  - path: %s\n", yamlQuote(path))
	fmt.Fprintf(b, "    permissions: %s\n", yamlQuote(perm))
	b.WriteString("    encoding: \"b64\"\n")
	fmt.Fprintf(b, "    content: %s\n", yamlQuote(base64.StdEncoding.EncodeToString(content)))
}
